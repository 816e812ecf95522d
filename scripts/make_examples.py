"""Draw the example input images the bundled workflows load (example_inputs/, copied into ComfyUI's input folder
when the pack loads). Everything is drawn here from shapes and seeded noise, so the files are ours to
redistribute under the pack's licence; rerunning the script rewrites the same pixels.

    python scripts/make_examples.py

(The folder is not called `examples/`: ComfyUI serves a pack's `examples` folder as its workflow templates and
would then hide `workflows/`.)
"""
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "example_inputs"
SIZE = 512
PREFIX = "inversion_suite_"


def texture(rng, strength, blur):
    """Soft seeded noise in [-strength, strength] per pixel (grey), so flat areas look photographic."""
    noise = Image.fromarray((rng.random((SIZE, SIZE)) * 255).astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(blur))
    n = np.asarray(noise, dtype=np.float32) / 255.0
    return (n - n.mean()) / max(float(n.std()), 1e-6) * strength


def finish(img, rng, strength=6.0, blur=1.5):
    a = np.asarray(img, dtype=np.float32) + texture(rng, strength, blur)[..., None]
    return Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB")


def vertical_gradient(top, bottom):
    t = np.linspace(0, 1, SIZE, dtype=np.float32)[:, None, None]
    a = np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t
    return Image.fromarray(np.broadcast_to(a, (SIZE, SIZE, 3)).astype(np.uint8), "RGB")


def scene(car_colour=(40, 80, 170)):
    """A house with a tree and a car under a blue sky."""
    img = vertical_gradient((95, 150, 220), (200, 225, 245))
    d = ImageDraw.Draw(img)
    d.ellipse((380, 40, 450, 110), fill=(255, 236, 160))
    d.polygon([(0, 330), (140, 290), (300, 315), (512, 280), (512, 512), (0, 512)], fill=(95, 150, 80))
    d.rectangle((0, 400, 512, 512), fill=(120, 120, 125))
    d.rectangle((60, 230, 250, 380), fill=(225, 210, 180))
    d.polygon([(45, 235), (155, 160), (265, 235)], fill=(150, 60, 50))
    d.rectangle((135, 300, 175, 380), fill=(100, 70, 50))
    for x in (80, 195):
        d.rectangle((x, 260, x + 35, 295), fill=(170, 205, 235), outline=(250, 250, 250), width=3)
    d.rectangle((375, 250, 395, 380), fill=(100, 70, 45))
    d.ellipse((320, 150, 450, 290), fill=(55, 120, 60))
    d.rounded_rectangle((250, 395, 470, 455), radius=18, fill=car_colour)
    d.polygon([(290, 395), (320, 355), (410, 355), (440, 395)], fill=car_colour)
    d.polygon([(305, 392), (327, 362), (362, 362), (362, 392)], fill=(180, 210, 235))
    d.polygon([(370, 392), (370, 362), (405, 362), (427, 392)], fill=(180, 210, 235))
    for x in (290, 420):
        d.ellipse((x - 24, 432, x + 24, 480), fill=(30, 30, 30))
        d.ellipse((x - 10, 446, x + 10, 466), fill=(160, 160, 160))
    return img


def face():
    """A stylised head-and-shoulders portrait."""
    img = vertical_gradient((170, 190, 200), (120, 140, 150))
    d = ImageDraw.Draw(img)
    d.ellipse((90, 380, 422, 640), fill=(60, 90, 140))
    d.rectangle((220, 330, 292, 410), fill=(225, 180, 150))
    d.ellipse((150, 60, 362, 260), fill=(80, 50, 30))
    d.ellipse((160, 95, 352, 370), fill=(232, 190, 160))
    d.chord((150, 60, 362, 230), 180, 360, fill=(80, 50, 30))
    for cx in (212, 300):
        d.ellipse((cx - 22, 205, cx + 22, 229), fill=(250, 250, 250))
        d.ellipse((cx - 9, 208, cx + 9, 226), fill=(70, 45, 30))
        d.arc((cx - 26, 185, cx + 26, 205), 200, 340, fill=(70, 45, 30), width=4)
    d.line([(256, 225), (248, 280), (262, 284)], fill=(190, 140, 115), width=3)
    d.chord((220, 300, 292, 335), 0, 180, fill=(190, 110, 110))
    return img


def strokes(img, colour, shapes):
    out = img.copy()
    d = ImageDraw.Draw(out)
    for points, width in shapes:
        d.line(points, fill=colour, width=width, joint="curve")
    return out


def car_mask():
    """The mask a retoucher paints over the photo's car in ComfyUI's mask editor: a rounded brush region with a
    soft edge, white (1) where the edit goes. Load it with Load Image (as Mask), channel red."""
    img = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(img).rounded_rectangle((238, 342, 482, 488), radius=34, fill=255)
    return img.filter(ImageFilter.GaussianBlur(2.0))


def degrade(img, rng):
    small = img.resize((SIZE // 4, SIZE // 4), Image.BILINEAR).resize((SIZE, SIZE), Image.BILINEAR)
    a = np.asarray(small.filter(ImageFilter.GaussianBlur(1.5)), np.float32) + rng.normal(0, 14, (SIZE, SIZE, 3))
    return Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB")


CLIP_SIZE, CLIP_FRAMES = (320, 192), 17  # Wan: sides a multiple of 16, frames 4k + 1 (17 frames → 5 latent frames)


def clip_frames(rng):
    """A short clip: a red car drives left to right along a road past a tree, under a still sky (one texture for
    every frame, so only the car changes)."""
    w, h = CLIP_SIZE
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    sky = np.array((100, 155, 225), np.float32) * (1 - t) + np.array((205, 228, 245), np.float32) * t
    back = Image.fromarray(np.broadcast_to(sky, (h, w, 3)).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(back)
    d.polygon([(0, 110), (90, 96), (200, 106), (320, 92), (320, 192), (0, 192)], fill=(95, 150, 80))
    d.rectangle((0, 140, w, 176), fill=(120, 120, 125))
    d.line([(0, 158), (w, 158)], fill=(235, 235, 220), width=2)
    d.rectangle((232, 70, 242, 120), fill=(100, 70, 45))
    d.ellipse((205, 30, 270, 95), fill=(55, 120, 60))
    noise = Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(1.0))
    n = np.asarray(noise, dtype=np.float32) / 255.0
    grain = ((n - n.mean()) / max(float(n.std()), 1e-6) * 4.0)[..., None]
    frames = []
    for i in range(CLIP_FRAMES):
        img = back.copy()
        d = ImageDraw.Draw(img)
        x = -20 + i * 17  # 17 px a frame: from the left edge to past the tree
        d.rounded_rectangle((x, 138, x + 90, 162), radius=8, fill=(190, 40, 40))
        d.polygon([(x + 18, 138), (x + 32, 122), (x + 66, 122), (x + 78, 138)], fill=(190, 40, 40))
        d.polygon([(x + 26, 137), (x + 35, 126), (x + 48, 126), (x + 48, 137)], fill=(180, 210, 235))
        for cx in (x + 20, x + 72):
            d.ellipse((cx - 10, 152, cx + 10, 172), fill=(30, 30, 30))
        a = np.asarray(img, dtype=np.float32) + grain
        frames.append(Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB"))
    return frames


def images():
    """{file name: PIL image} for every example input."""
    rng = np.random.default_rng(20251012)
    photo = finish(scene(), rng)
    portrait = finish(face(), rng, strength=4.0)
    degraded = degrade(portrait, rng)
    balloon = photo.copy()
    d = ImageDraw.Draw(balloon)
    d.ellipse((150, 40, 250, 150), fill=(220, 60, 50))
    d.polygon([(165, 125), (235, 125), (212, 165), (188, 165)], fill=(220, 60, 50))
    d.rectangle((188, 172, 212, 192), fill=(130, 90, 50))
    d.line([(190, 165), (192, 172)], fill=(60, 40, 20), width=2)
    d.line([(210, 165), (208, 172)], fill=(60, 40, 20), width=2)
    eye_shadow = strokes(portrait, (150, 60, 140), [([(190, 196), (234, 196)], 7), ([(278, 196), (322, 196)], 7)])
    return {
        "photo.png": photo,
        "photo_with_strokes.png": strokes(photo, (210, 30, 30), [([(270, 420), (450, 420)], 22),
                                                                 ([(300, 385), (420, 385)], 14),
                                                                 ([(262, 440), (460, 440)], 12)]),
        "photo_with_pasted_edit.png": balloon,
        "photo_car_mask.png": car_mask(),
        "portrait.png": portrait,
        "portrait_with_makeup_strokes.png": strokes(eye_shadow, (200, 20, 50), [([(228, 316), (284, 316)], 10)]),
        "portrait_degraded.png": degraded,
        "portrait_lightly_enhanced.png": degraded.filter(ImageFilter.MedianFilter(3)).filter(
            ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2)),
    }


def main():
    OUT.mkdir(exist_ok=True)
    for name, img in images().items():
        path = OUT / (PREFIX + name)
        img.save(path, optimize=True)
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")
    frames = clip_frames(np.random.default_rng(20261121))  # an animated PNG: LoadImage gives every frame
    path = OUT / (PREFIX + "clip.png")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000 // 16, loop=0, optimize=True)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB, {len(frames)} frames)")


if __name__ == "__main__":
    main()
