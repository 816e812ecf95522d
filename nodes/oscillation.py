"""placeholder"""
from comfy_api.v0_0_2 import io
class OscillationInvert: pass
class GroupInversion: pass
