"""Speech output: speak a short status offline with espeak-ng, into a WAV file.

espeak-ng is an optional system dependency (Debian package `espeak-ng`); constructing the plugin
without it raises a SageError that says how to install it. One step synthesises the text; energy
is 1 until a non-empty WAV file exists, then 0.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import SageError
from ..contract import HaltDecision, History


def espeak_path() -> str | None:
    return shutil.which("espeak-ng")


@dataclass
class SpeechState:
    text: str
    path: Path
    done: bool = False


class Speech:
    name = "speech"
    role = "output"

    def __init__(self, out_dir: str | Path, voice: str = "en") -> None:
        exe = espeak_path()
        if exe is None:
            raise SageError("speech output needs espeak-ng, which is not installed "
                            "(Debian/Ubuntu: apt-get install espeak-ng); or disable plugins.speech")
        self.exe, self.voice, self.out_dir = exe, voice, Path(out_dir)
        self.count = 0

    def init_state(self, x: Any, ctx: dict[str, Any]) -> SpeechState:
        self.count += 1
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return SpeechState(str(x)[:500], self.out_dir / f"status_{ctx.get('cycle', self.count):05d}.wav")

    def step(self, s: SpeechState) -> SpeechState:
        try:
            subprocess.run([self.exe, "-v", self.voice, "-w", str(s.path), "--", s.text], check=True,
                           capture_output=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            err = getattr(e, "stderr", b"") or b""
            raise SageError(f"espeak-ng failed: {err.decode(errors='replace').strip() or e}") from None
        return SpeechState(s.text, s.path, True)

    def energy(self, s: SpeechState) -> float:
        return 0.0 if s.done and s.path.is_file() and s.path.stat().st_size > 44 else 1.0  # 44 = WAV header

    def halt(self, history: History, s: SpeechState) -> HaltDecision:
        return HaltDecision(True, "spoken") if self.energy(s) == 0.0 else HaltDecision(False)
