"""Teachers: grid teachers behind one protocol (`Teacher.encode`: the GR00T N1.5 backbone, any local
Hugging Face vision model) with leak-free inputs and an on-disk feature store. A trained SAGE model as
an online teacher of per-token logits and hidden states is `distill.sage_teacher.SageTeacher`."""

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
