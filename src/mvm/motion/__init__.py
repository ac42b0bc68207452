"""Motion for motion-guided masking: codec motion vectors (``codec``), a block-matching fallback
(``estimate``) and the per-frame field -> clip -> token-grid path (``field``).

Convention everywhere: where content moved from the previous frame to this one, in pixels,
(dx right, dy down). See docs/motion.md.
"""

from mvm.motion.codec import codec_field
from mvm.motion.estimate import estimate_field
from mvm.motion.field import (
    MotionField,
    clip_motion,
    frame_motion,
    motion_for_clip,
    motion_for_clips,
    to_token_grid,
    token_magnitude,
)

__all__ = ["MotionField", "clip_motion", "codec_field", "estimate_field", "frame_motion", "motion_for_clip",
           "motion_for_clips", "to_token_grid", "token_magnitude"]
