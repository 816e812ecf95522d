"""Prompt tokens for Prompt-to-Prompt: the token ids of a prompt and of a word, and reweighting syntax."""
import math

import torch

from ...core import attention as A
from ..common import fail


def token_ids(clip, text):
    """Token ids of ``text`` as the CLIP encoder lays them out (all 77-token chunks of the 'l' tokenizer)."""
    tokens = clip.tokenize(text)
    key = "l" if "l" in tokens else sorted(tokens)[0]
    ids = []
    for chunk in tokens[key]:
        for item in chunk:
            token = item[0]
            ids.append(int(token) if isinstance(token, int) or (torch.is_tensor(token) and token.numel() == 1)
                       else -1 - len(ids))
    return ids


def word_ids(clip, word):
    """The ids of a word alone: its tokenization without the start token and the end/padding."""
    ids = token_ids(clip, word)
    return ids[1:A.content_length(ids) - 1]


def parse_reweight(node, clip, text, ids):
    """'word:scale, word2:scale' → a [T] scale vector over the edit prompt's tokens."""
    scales = torch.ones(len(ids))
    for item in text.split(","):
        if not item.strip():
            continue
        word, _, value = item.rpartition(":")
        try:
            value = float(value)
        except ValueError:
            word = ""
        if not word.strip() or not math.isfinite(value):
            fail(node, "reweight", "must read 'word:scale, word:scale' with finite scales", repr(item.strip()))
        positions = A.find_tokens(ids, word_ids(clip, word.strip()))
        if not positions:
            fail(node, "reweight", f"names '{word.strip()}', which is not in edit_text")
        scales[positions] = value
    return scales
