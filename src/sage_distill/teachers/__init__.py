"""Teachers: one protocol (`Teacher.encode`), three backends (GR00T N1.5 backbone, any local Hugging
Face vision model, a SAGE model), leak-free inputs, and an on-disk feature store."""

from .base import (
    Teacher,
    TeacherError,
    TeacherInput,
    batch_keys,
    pool_tokens,
    query_key,
    render_canvases,
    teacher_inputs,
)
from .factory import TeacherConfig, build_teacher, teacher_targets

__all__ = ["batch_keys", "Teacher", "TeacherConfig", "TeacherError", "TeacherInput", "build_teacher", "pool_tokens",
           "query_key", "render_canvases", "teacher_inputs", "teacher_targets"]
