"""Voice prompts made with the real espeak-ng (Debian's package), checked with the stdlib wave."""

import shutil
import subprocess
import wave
from pathlib import Path

import pytest

from kiosk.voice import INSTALL_HINT, KINDS, TEXTS, EspeakMissingError, VoicePrompts, main

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason=f"espeak-ng not installed ({INSTALL_HINT})"
)


def _duration_s(path: Path) -> tuple[int, float]:
    with wave.open(str(path), "rb") as w:
        return w.getnframes(), w.getnframes() / w.getframerate()


def _write_wav(path: Path, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * int(16000 * seconds))


def test_generate_both_languages_makes_valid_wavs(tmp_path: Path) -> None:
    vp = VoicePrompts(tmp_path / "voice")
    paths = vp.generate()
    expected = [tmp_path / "voice" / f"{k}-{lang}.wav" for k in KINDS for lang in ("zh", "en")]
    assert paths == expected
    for p in paths:
        frames, seconds = _duration_s(p)
        assert frames > 0, p
        assert 0.3 < seconds < 10, (p, seconds)
        assert p.with_suffix(".json").is_file()
        kind, lang = p.stem.split("-")
        assert vp.path(kind, lang) == p
    # no temporary files left behind
    assert sorted(f.suffix for f in (tmp_path / "voice").iterdir()) == [".json"] * 4 + [".wav"] * 4


def test_mandarin_voice_speaks_mandarin_not_english_pinyin(tmp_path: Path) -> None:
    # espeak-ng 1.51's `cmn` voice reads 汉字 as English-spelled pinyin ("king three ...");
    # the chosen voice must not switch to English phonemes for the Chinese texts.
    vp = VoicePrompts(tmp_path)
    voice = vp.voice("zh")
    for kind in KINDS:
        out = subprocess.run(
            ["espeak-ng", "-v", voice, "-q", "-x", "-b", "1", TEXTS[kind]["zh"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "(en)" not in out, (voice, out)
    assert vp.voice("en") == "en"


def test_second_generate_rewrites_nothing(tmp_path: Path) -> None:
    vp = VoicePrompts(tmp_path)
    first = vp.generate()
    stamps = {p: p.stat().st_mtime_ns for p in first}
    sidecars = {p: p.with_suffix(".json").stat().st_mtime_ns for p in first}
    # a fresh instance (a restarted kiosk) finds the files current as well
    again = VoicePrompts(tmp_path).generate()
    assert again == first
    assert {p: p.stat().st_mtime_ns for p in again} == stamps
    assert {p: p.with_suffix(".json").stat().st_mtime_ns for p in again} == sidecars


def test_changed_text_remakes_only_that_file(tmp_path: Path) -> None:
    VoicePrompts(tmp_path).generate(["en"])
    prompt, thanks = tmp_path / "prompt-en.wav", tmp_path / "thanks-en.wav"
    old_prompt, old_thanks = prompt.stat().st_mtime_ns, thanks.stat().st_mtime_ns
    old_frames = _duration_s(prompt)[0]
    texts = {k: dict(v) for k, v in TEXTS.items()}
    texts["prompt"]["en"] = "Please rate our service now, it only takes two seconds"
    VoicePrompts(tmp_path, texts=texts).generate(["en"])
    assert prompt.stat().st_mtime_ns != old_prompt
    assert _duration_s(prompt)[0] > old_frames  # the longer text was spoken
    assert thanks.stat().st_mtime_ns == old_thanks


def test_damaged_or_missing_sidecar_remakes(tmp_path: Path) -> None:
    vp = VoicePrompts(tmp_path)
    vp.generate(["en"])
    (tmp_path / "thanks-en.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "prompt-en.json").unlink()
    assert not vp.is_current("thanks", "en")
    assert not vp.is_current("prompt", "en")
    vp.generate(["en"])
    assert vp.is_current("thanks", "en") and vp.is_current("prompt", "en")


def test_custom_recording_is_preferred(tmp_path: Path) -> None:
    vp = VoicePrompts(tmp_path)
    assert vp.path("prompt", "zh") is None
    vp.generate(["zh"])
    assert vp.path("prompt", "zh") == tmp_path / "prompt-zh.wav"
    custom = tmp_path / "custom" / "prompt-zh.wav"
    _write_wav(custom)
    assert vp.path("prompt", "zh") == custom
    assert vp.path("thanks", "zh") == tmp_path / "thanks-zh.wav"
    # a shipped recording works without anything generated (and without espeak-ng)
    shipped = VoicePrompts(tmp_path / "shipped", espeak="/nonexistent/espeak-ng")
    _write_wav(tmp_path / "shipped" / "custom" / "thanks-en.wav")
    assert shipped.path("thanks", "en") == tmp_path / "shipped" / "custom" / "thanks-en.wav"
    assert shipped.path("prompt", "en") is None


def test_bogus_espeak_path_gives_clear_error(tmp_path: Path) -> None:
    vp = VoicePrompts(tmp_path / "voice", espeak=str(tmp_path / "no-such-espeak-ng"))
    with pytest.raises(EspeakMissingError, match="apt-get install espeak-ng"):
        vp.generate()
    assert not list((tmp_path / "voice").glob("*.wav"))


def test_espeak_not_on_path_gives_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(EspeakMissingError, match="apt-get install espeak-ng"):
        VoicePrompts(tmp_path / "voice").generate()


def test_unknown_language_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown language"):
        VoicePrompts(tmp_path).generate(["fr"])


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "en"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "prompt-en.wav"), str(tmp_path / "thanks-en.wav")]
    assert main([]) == 2
    assert main([str(tmp_path / "x"), "fr"]) == 1
    assert "unknown language" in capsys.readouterr().err
