"""Spoken prompt and thank-you: WAV files made once with espeak-ng, or a hall's own recordings.

Playing the files is the UI's job (ALSA's `aplay`, in a process of its own) and muting is
configuration (the `voice` setting); this module only makes the files and says which one to
play.

Mandarin voice: Debian 12's espeak-ng 1.51 (also Raspberry Pi OS Bookworm's) has two Mandarin
voices, `cmn` ("latin as English") and `cmn-latn-pinyin`. Both turn 汉字 into tone-numbered
pinyin internally ("请" -> `qing3`), but `cmn` then reads that pinyin with the English rules:
"请您对我的服务进行评价" comes out as "king three, nin two, dui four, ..." (see
`espeak-ng -v cmn -x "你好"`: `(en)nI55Tr'i:55`). `cmn-latn-pinyin` speaks it as Mandarin
(`tS;h'i21N n'i35n t'uei51 ...`), so it is tried first and `cmn` is only a fallback for an
espeak-ng that lacks it. The texts here contain no Latin letters, so nothing is lost.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

KINDS: Final = ("prompt", "thanks")
LANGUAGES: Final = ("zh", "en")

TEXTS: Final[Mapping[str, Mapping[str, str]]] = {
    "prompt": {"zh": "请您对我的服务进行评价", "en": "Please rate our service"},
    "thanks": {"zh": "感谢您的评价", "en": "Thank you for your rating"},
}

# espeak-ng voices per language, best first; the first one this espeak-ng has is used.
VOICES: Final[Mapping[str, Sequence[str]]] = {
    "zh": ("cmn-latn-pinyin", "cmn"),
    "en": ("en",),
}

DEFAULT_SPEED_WPM: Final = 150  # espeak-ng's default is 175; slower is clearer for older people
INSTALL_HINT: Final = "apt-get install espeak-ng"
_TIMEOUT_S: Final = 60.0


class EspeakMissingError(RuntimeError):
    """espeak-ng is not installed (or the given path is not an executable)."""


class VoiceError(RuntimeError):
    """espeak-ng ran but did not make a usable recording."""


class VoicePrompts:
    """The prompt and thank-you recordings of one kiosk, kept in `directory`.

    Generated files are `directory/{kind}-{lang}.wav`, each with a sidecar
    `{kind}-{lang}.json` holding the hash of what made it (text, voice, speed); a hall's own
    recordings go in `directory/custom/{kind}-{lang}.wav` and always win.
    """

    def __init__(
        self,
        directory: Path,
        *,
        espeak: str | None = None,
        texts: Mapping[str, Mapping[str, str]] | None = None,
        speed_wpm: int = DEFAULT_SPEED_WPM,
    ) -> None:
        self.directory = Path(directory)
        self.custom_directory = self.directory / "custom"
        self._espeak = espeak
        self.texts: Mapping[str, Mapping[str, str]] = texts if texts is not None else TEXTS
        self.speed_wpm = speed_wpm
        self._voices: dict[str, str] = {}

    # --- where the files are -------------------------------------------------------------

    def generated_path(self, kind: str, lang: str) -> Path:
        """Where the espeak-ng recording of `kind` in `lang` is (or would be) written."""
        return self.directory / f"{kind}-{lang}.wav"

    def custom_path(self, kind: str, lang: str) -> Path:
        """Where a hall's own recording of `kind` in `lang` is looked for."""
        return self.custom_directory / f"{kind}-{lang}.wav"

    def path(self, kind: str, lang: str) -> Path | None:
        """The recording to play for `kind` in `lang`: the hall's own, else the generated one.

        None when there is neither (the UI then stays silent).
        """
        for candidate in (self.custom_path(kind, lang), self.generated_path(kind, lang)):
            if candidate.is_file():
                return candidate
        return None

    # --- making the files ----------------------------------------------------------------

    def espeak_path(self) -> str:
        """The espeak-ng executable; raises EspeakMissingError with the install command."""
        if self._espeak is None:
            found = shutil.which("espeak-ng")
            if found is None:
                raise EspeakMissingError(
                    f"espeak-ng is not installed (needed for the spoken prompts): {INSTALL_HINT}"
                )
            return found
        if not (os.path.isfile(self._espeak) and os.access(self._espeak, os.X_OK)):
            raise EspeakMissingError(
                f"espeak-ng not found at {self._espeak!r} (needed for the spoken prompts): "
                f"{INSTALL_HINT}"
            )
        return self._espeak

    def voice(self, lang: str) -> str:
        """The espeak-ng voice used for `lang` (the first of VOICES[lang] that is installed)."""
        if lang in self._voices:
            return self._voices[lang]
        wanted = VOICES.get(lang)
        if not wanted:
            raise ValueError(f"no espeak-ng voice known for language {lang!r}")
        listing = self._run(["--voices=" + lang]).stdout
        # Columns: Pty Language Age/Gender VoiceName File Other-Languages; the last holds
        # "(zh-cmn 5)(zh 5)": names that also select the voice, e.g. `-v en` for en-gb.
        available: set[str] = set()
        for line in listing.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 1:
                available.add(fields[1].lower())
            available.update(m.lower() for m in re.findall(r"\(([^\s()]+) \d+\)", line))
        for name in wanted:
            if name.lower() in available:
                self._voices[lang] = name
                return name
        raise VoiceError(
            f"espeak-ng has none of the voices {list(wanted)} for {lang!r} "
            f"(installed: {sorted(available)}); reinstall espeak-ng-data"
        )

    def digest(self, kind: str, lang: str) -> str:
        """Hash of what makes the recording (text, voice choice, speed); a change remakes it.

        It needs no espeak-ng, so up-to-date recordings are found even where it is missing.
        """
        made_of = {
            "text": self._text(kind, lang),
            "voices": list(VOICES.get(lang, ())),
            "speed_wpm": self.speed_wpm,
        }
        return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()

    def is_current(self, kind: str, lang: str) -> bool:
        """True if the generated WAV exists and its sidecar matches the current text and voice."""
        wav = self.generated_path(kind, lang)
        if not wav.is_file():
            return False
        try:
            meta = json.loads(self._sidecar(kind, lang).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and meta.get("sha256") == self.digest(kind, lang)

    def generate(self, languages: Iterable[str] = LANGUAGES) -> list[Path]:
        """Make `{kind}-{lang}.wav` for every kind and language that is missing or out of date.

        Returns the WAV paths for all of them (kind by kind, language by language), whether
        made now or already current. Files that are current are not touched, so this is cheap
        to call at every start. Raises EspeakMissingError, VoiceError or ValueError.
        """
        langs = list(languages)
        for lang in langs:
            if lang not in VOICES:
                raise ValueError(f"unknown language {lang!r}; known: {sorted(VOICES)}")
        self.directory.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        for kind in KINDS:
            for lang in langs:
                wav = self.generated_path(kind, lang)
                if not self.is_current(kind, lang):
                    self._synthesize(kind, lang, wav)
                paths.append(wav)
        return paths

    # --- internals -----------------------------------------------------------------------

    def _text(self, kind: str, lang: str) -> str:
        try:
            return self.texts[kind][lang]
        except KeyError:
            raise ValueError(f"no {kind!r} text for language {lang!r}") from None

    def _sidecar(self, kind: str, lang: str) -> Path:
        return self.directory / f"{kind}-{lang}.json"

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        exe = self.espeak_path()
        try:
            done = subprocess.run(
                [exe, *args],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError as exc:  # vanished between the check and the call
            raise EspeakMissingError(f"espeak-ng not found at {exe!r}: {INSTALL_HINT}") from exc
        except subprocess.TimeoutExpired as exc:
            raise VoiceError(f"espeak-ng {' '.join(args)} took over {_TIMEOUT_S:.0f} s") from exc
        if done.returncode != 0:
            raise VoiceError(
                f"espeak-ng {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    def _synthesize(self, kind: str, lang: str, wav: Path) -> None:
        text = self._text(kind, lang)
        voice = self.voice(lang)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{kind}-{lang}.", suffix=".wav", dir=wav.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # -b 1: the text is UTF-8 whatever the locale (a systemd service often runs with C).
            self._run(["-v", voice, "-s", str(self.speed_wpm), "-b", "1", "-w", str(tmp), text])
            frames = _wav_frames(tmp)
            if frames <= 0:
                raise VoiceError(f"espeak-ng wrote an empty recording for {kind}-{lang}")
            os.replace(tmp, wav)
        finally:
            tmp.unlink(missing_ok=True)
        # The sidecar is written after the WAV: a crash in between only means a remake next time.
        meta = {"sha256": self.digest(kind, lang), "text": text, "voice": voice}
        sidecar = self._sidecar(kind, lang)
        tmp_meta = sidecar.with_name(f".{sidecar.name}.tmp")
        tmp_meta.write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", "utf-8")
        os.replace(tmp_meta, sidecar)
        log.info("voice: made %s with espeak-ng -v %s (%d frames)", wav.name, voice, frames)


def _wav_frames(path: Path) -> int:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes()
    except (OSError, EOFError, wave.Error) as exc:
        raise VoiceError(f"espeak-ng did not write a valid WAV file: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kiosk.voice DIRECTORY [LANG ...]`: make the recordings (used by install.sh)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stderr.write("usage: python -m kiosk.voice DIRECTORY [LANG ...]\n")
        return 2
    prompts = VoicePrompts(Path(args[0]))
    try:
        paths = prompts.generate(args[1:] or LANGUAGES)
    except (EspeakMissingError, VoiceError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    for p in paths:
        sys.stdout.write(f"{p}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
