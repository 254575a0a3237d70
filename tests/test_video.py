"""Clips (nst/video.py, nst/flow.py, nst/sequence.py): reading and writing with PyAV, the flow and
its reliability, the temporal term, and the refusals. Clips are made here with PyAV: small (64-96
px), a few frames, a step or two per frame."""

import json
import shlex
import signal
from fractions import Fraction

import av
import numpy
import pytest
import torch
from PIL import Image

from nst import Settings, VideoError, VideoSettings, distances, images, stylize, stylize_video
from nst import flow, sequence
from nst.__main__ import main as cli
from nst.objective import Objective
from nst.runtime import Runtime
from nst.terms import Temporal
from nst.video import Clip, ClipWriter, temporal_consistency
from nst.vgg import VGG19Features
from nst.weights import load_weights

from .conftest import EXAMPLES

PAN = 3  # px a frame
SIZE = (96, 64)  # width, height


def _panned(photo, count, cut_at=None):
    """Frames of a camera panning right across `photo` by PAN px a frame; from `cut_at` on, another scene."""
    wide = numpy.asarray(photo.resize((SIZE[0] + PAN * count + 8, SIZE[1] + 8)))
    other = numpy.asarray(images.open_image(EXAMPLES / "rocket.jpg").resize(SIZE))
    return [other if cut_at is not None and index >= cut_at else wide[4:4 + SIZE[1], index * PAN: index * PAN + SIZE[0]]
            for index in range(count)]


def _write_clip(path, frames, rate=10, audio_seconds=0.0):
    """An MP4 of `frames` (H, W, 3 uint8; odd sizes are padded by the encoder's own size) with a sine tone if asked."""
    with av.open(str(path), "w", format="mp4") as output:
        height, width = frames[0].shape[:2]
        video = output.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        video.options = {"crf": "12"}
        audio = output.add_stream("aac", rate=8000) if audio_seconds else None
        for index, frame in enumerate(frames):
            padded = numpy.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            picture = av.VideoFrame.from_ndarray(numpy.ascontiguousarray(padded), format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, rate)
            output.mux(video.encode(picture))
        output.mux(video.encode(None))
        if audio is not None:
            times = numpy.arange(int(8000 * audio_seconds)) / 8000
            tone = av.AudioFrame.from_ndarray((0.3 * numpy.sin(2 * numpy.pi * 440 * times)).astype(numpy.float32)[None],
                                              format="fltp", layout="mono")
            tone.sample_rate, tone.pts = 8000, 0
            output.mux(audio.encode(tone))
            output.mux(audio.encode(None))
    return path


def test_the_warped_previous_frame_matches_the_current_one_on_reliable_pixels(content):
    before, now = (Image.fromarray(frame) for frame in _panned(content, 2))
    moved = flow.motion(before, now)
    # The camera moved PAN px right: each pixel was PAN px further right in the frame before.
    assert numpy.median(moved.backward[..., 0]) == pytest.approx(PAN, abs=0.25)
    assert numpy.median(moved.backward[..., 1]) == pytest.approx(0, abs=0.25)
    # The strip that came into view on the right was nowhere in the frame before.
    assert moved.reliability[:, -PAN:].mean() == 0
    assert 0.8 <= moved.reliable_share and not moved.is_cut
    previous, current = (numpy.asarray(frame, dtype=numpy.float32) / 255 for frame in (before, now))
    reliable = moved.reliability.astype(bool)
    error = numpy.sqrt(((flow.warp(previous, moved.backward) - current) ** 2)[reliable].mean())
    unwarped = numpy.sqrt(((previous - current) ** 2)[reliable].mean())
    # A whole-pixel shift read back bilinearly: what is left is the flow's sub-pixel error times the
    # photo's gradient, well under 1 % RMS; the shift itself changes 12 %.
    assert error <= 0.01 and error <= unwarped / 10


def test_a_scene_cut_starts_the_frame_afresh(tmp_path, content, style):
    clip = _write_clip(tmp_path / "cut.mp4", _panned(content, 3, cut_at=2))
    done = [frame for frame in stylize_video(clip, style, Settings(size=64, steps=3), VideoSettings()) if frame.done]
    assert [frame.fresh for frame in done] == [True, False, True]
    assert "temporal" in done[1].progress.losses and "temporal" not in done[2].progress.losses
    # A later frame takes a third of a still's steps at 64 px (one scale) by default; a cut, a whole still run.
    assert done[1].progress.steps == 1 and done[2].progress.steps == 3
    assert done[1].reliable >= 0.8 > done[2].reliable


def test_a_later_frame_starts_from_the_painted_frame_before_moved_along_the_flow(tmp_path, content, style):
    clip = Clip.open(_write_clip(tmp_path / "pan.mp4", _panned(content, 2)))
    # No term moves the pictures: the first frame stays the noise it starts from, the second where it starts.
    settings = Settings(size=SIZE[0], steps=1, content_weight=0.0, style_weight=0.0, init="noise")
    first, second = [frame.image for frame in stylize_video(clip, style, settings, VideoSettings(temporal_weight=0.0, later_steps=1))
                     if frame.done]
    moved = flow.motion(*clip.frames())
    expected = flow.warp(numpy.asarray(first, dtype=numpy.float32) / 255, moved.backward)
    difference = numpy.abs(numpy.asarray(second, dtype=numpy.float32) / 255 - expected)[moved.reliability.astype(bool)]
    assert float(difference.max()) <= 1 / 255 + 1e-4  # 8-bit rounding of the first frame, then of the second


def test_the_temporal_term_pulls_a_frame_toward_the_warped_previous_one(content, style):
    photo = content.resize(SIZE)
    target = torch.rand(1, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(0))  # far from anything the photo gives
    reliability = torch.ones(1, 1, SIZE[1], SIZE[0])
    reliability[..., : SIZE[0] // 2] = 0  # the left half is not to be trusted: no pull there
    settings = Settings(size=SIZE[0], steps=3, multiscale=False)

    def distances(pulled):
        terms = (lambda size, device: [Temporal(target, reliability, 200.0)]) if pulled else None
        frame = list(stylize(photo, style, settings, start=images.to_tensor(photo), extra_terms=terms))[-1]
        picture = images.to_tensor(frame.image)
        return [float(((picture - target) ** 2)[..., half].mean()) for half in (slice(0, SIZE[0] // 2), slice(SIZE[0] // 2, None))], frame

    (free_left, free_right), _ = distances(False)
    (pulled_left, pulled_right), frame = distances(True)
    assert pulled_right < free_right / 2  # reliable pixels go toward the warped frame
    assert pulled_left > free_left * 0.8  # unreliable ones are left to the picture's own terms
    assert frame.losses["temporal"] > 0


def test_a_run_starts_from_the_picture_given(content, style):
    photo = content.resize(SIZE)
    start = torch.rand(1, 3, SIZE[1], SIZE[0], generator=torch.Generator().manual_seed(0))
    settings = Settings(size=SIZE[0], steps=1, content_weight=0.0, style_weight=0.0, multiscale=False)  # nothing to move it
    picture = images.to_tensor(list(stylize(photo, style, settings, start=start))[-1].image)
    assert float((picture - start).abs().max()) <= 0.5 / 255 + 1e-6  # 8-bit rounding


def test_a_mask_holds_for_every_frame(tmp_path, content, style):
    clip = Clip.open(_write_clip(tmp_path / "pan.mp4", _panned(content, 2)))
    mask = Image.new("L", SIZE, 255)
    mask.paste(0, (0, 0, SIZE[0] // 2, SIZE[1]))  # the left half keeps the photo
    painted = [frame.image for frame in stylize_video(clip, style, Settings(size=SIZE[0], steps=2, mask_feather=4),
                                                      VideoSettings(later_steps=2), mask=mask) if frame.done]
    for picture, photo in zip(painted, clip.frames(), strict=True):
        kept, given = (numpy.asarray(image, dtype=numpy.float32)[:, : SIZE[0] // 4] / 255 for image in (picture, photo))
        assert float(numpy.abs(kept - given).max()) <= 1 / 255 + 1e-4
        painted_side, photo_side = (numpy.asarray(image, dtype=numpy.float32)[:, -SIZE[0] // 4:] / 255 for image in (picture, photo))
        assert float(numpy.abs(painted_side - photo_side).mean()) > 0.01  # the right half painted: not the photo kept (<= 1/255)


def test_two_styles_split_by_a_mask_hold_for_every_frame(tmp_path, content, style, second_style):
    clip = Clip.open(_write_clip(tmp_path / "pan.mp4", _panned(content, 3)))
    mask = Image.new("L", SIZE, 255)
    mask.paste(0, (0, 0, SIZE[0] // 2, SIZE[1]))  # black: the left half takes the second style
    painted = [frame.image for frame in stylize_video(clip, [style, second_style], Settings(size=SIZE[0], steps=12, mask_feather=4),
                                                      VideoSettings(later_steps=30, temporal_weight=0), mask=mask) if frame.done]
    assert len(painted) == 3
    for picture in painted:
        left, right = picture.crop((0, 0, SIZE[0] // 2, SIZE[1])), picture.crop((SIZE[0] // 2, 0, SIZE[0], SIZE[1]))
        # each half is nearer its own painting, measured against the other half
        to_second = {name: distances(half, half, second_style)["style"] / distances(half, half, style)["style"]
                     for name, half in (("left", left), ("right", right))}
        assert to_second["left"] < to_second["right"], to_second


def test_frames_stream_through_one_at_a_time(tmp_path, monkeypatch, content, style):
    clip = Clip.open(_write_clip(tmp_path / "pan.mp4", _panned(content, 8)))
    decoded = []
    frames = Clip.frames

    def counted(self):  # instrumentation: the real decoder runs
        for image in frames(self):
            decoded.append(None)  # counted, not kept
            yield image

    monkeypatch.setattr(Clip, "frames", counted)
    ahead = [len(decoded) - frame.index for frame in stylize_video(clip, style, Settings(size=64, steps=1), VideoSettings(later_steps=1))
             if frame.done]
    assert len(ahead) == 8 and max(ahead) == 1, ahead  # a clip's length never sits in memory: one frame decoded at a time


def test_the_temporal_term_in_tiles_is_the_whole_pictures(content, style):
    model = VGG19Features(load_weights("embedded")).double().to(memory_format=torch.channels_last)
    photo = images.load_tensor(content, 224, "cpu")[..., :64, :224].double().contiguous()
    target = torch.rand(photo.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reliability = (torch.rand(1, 1, *photo.shape[-2:], generator=torch.Generator().manual_seed(2)) > 0.3).double()
    results = {}
    for tile in ("off", "64"):
        # The network's first layer alone: small margins, so that each tile reads a window of the picture.
        settings = Settings(content_weight=0.0, style_weight=0.0, content_layer="relu1_1", style_layers=("relu1_1",), tile=tile).validated()
        objective = Objective(model, photo, [images.load_tensor(style, 64, "cpu").double()], settings,
                              Runtime(torch.device("cpu"), "fp32", False, False))
        assert (objective.tiles is None) == (tile == "off")
        objective.terms.append(Temporal(target, reliability, 3.0))
        image = photo.clone().requires_grad_(True)
        terms = objective.loss_and_gradient(image)
        results[tile] = float(terms["temporal"].detach()), image.grad
    (whole, whole_gradient), (tiled, tiled_gradient) = results["off"], results["64"]
    assert tiled == pytest.approx(whole, rel=1e-12)
    assert float((tiled_gradient - whole_gradient).abs().max() / whole_gradient.abs().max()) <= 1e-12


def test_the_cli_writes_an_h264_mp4_with_the_audio_and_even_sizes(tmp_path, content, style, capsys):
    frames = [frame[:45, :67] for frame in _panned(content, 3)]  # 67 x 45: odd both ways
    clip = _write_clip(tmp_path / "odd.bin", frames, audio_seconds=0.3)  # recognised by content, not by name
    output = tmp_path / "painted.mp4"
    assert cli([str(clip), str(EXAMPLES / "starry_night.jpg"), "-o", str(output), "--size", "67", "--steps", "1",
                "--later-steps", "1", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [1, 2, 3]
    with av.open(str(output)) as written, av.open(str(clip)) as given:
        video, audio = written.streams.video[0], written.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (66, 44)
        assert video.average_rate == 10 and video.frames == 3
        copied = [bytes(packet) for packet in written.demux(audio) if packet.size]
        original = [bytes(packet) for packet in given.demux(given.streams.audio[0]) if packet.size]
    assert copied == original  # the audio's packets as they were
    assert sorted(path.name for path in tmp_path.iterdir()) == ["odd.bin", "painted.mp4"]
    with pytest.raises(SystemExit):  # known for a clip by its content: a picture cannot hold it
        cli([str(clip), str(EXAMPLES / "starry_night.jpg"), "-o", str(tmp_path / "painted.png")])
    assert "odd.bin is a clip: the output must end in .mp4" in capsys.readouterr().err


def _decoded(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def _ctrl_c_in_run(monkeypatch, run):
    """Ctrl-C (SIGINT, through Python's own handler) pressed in the `run`th frame's engine run, as it
    yields its first progress: the frames before it are painted, that one is not."""
    real, runs = sequence.stylize, []

    def stylize_and_press(*args, **kwargs):  # instrumentation: the real engine runs
        runs.append(run)
        for progress in real(*args, **kwargs):
            if len(runs) == run:
                signal.raise_signal(signal.SIGINT)
            yield progress

    monkeypatch.setattr(sequence, "stylize", stylize_and_press)


def _interrupted(monkeypatch, capsys, arguments, run):
    """Run the CLI with Ctrl-C in frame `run`'s run; its last line on stderr (130 asserted)."""
    _ctrl_c_in_run(monkeypatch, run)
    assert cli(arguments) == 130
    monkeypatch.undo()
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_ctrl_c_in_a_clip_keeps_its_frames_and_resume_makes_the_uninterrupted_clip(tmp_path, monkeypatch, capsys):
    common = [str(EXAMPLES / "walkers.mp4"), str(EXAMPLES / "starry_night.jpg"), "--size", "64", "--steps", "2", "--fps", "2",
              "--later-steps", "1"]
    whole, parted = tmp_path / "whole.mp4", tmp_path / "parted.mp4"
    assert cli([*common, "-o", str(whole)]) == 0
    capsys.readouterr()
    line = _interrupted(monkeypatch, capsys, [*common, "-o", str(parted)], run=4)
    folder = tmp_path / "parted.mp4.partial"
    assert line.startswith(f"interrupted after frame 3; kept the painted frames in {folder}; nothing written to {parted}; "
                           "to continue: python -m nst "), line
    assert sorted(path.name for path in folder.iterdir()) == ["frame-000001.png", "frame-000002.png", "frame-000003.png", "state.pt"]
    assert not parted.exists()
    command = shlex.split(line.partition("to continue: ")[2])
    assert command[-2:] == ["--resume", str(folder)]
    assert cli([*command[3:], "--json"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["frame"] for line in out.splitlines()] == [4, 5, 6, 7, 8]  # from the frame interrupted on
    assert "8/8" in err  # the progress bar counts the clip's frames, the kept ones with them
    # The same path as the uninterrupted run (the float painted frame and the input frame kept, not
    # re-read from 8 bits): the same frames to the bit, encoded by the same encoder.
    resumed, uninterrupted = _decoded(parted), _decoded(whole)
    assert len(resumed) == len(uninterrupted) == 8
    differences = [int(numpy.abs(one.astype(int) - other).max()) for one, other in zip(resumed, uninterrupted, strict=True)]
    assert differences == [0] * 8, f"max abs difference per frame (0-255): {differences}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["parted.mp4", "whole.mp4"]  # the folder removed


def test_a_clip_resumes_only_from_its_own_clip_and_style_and_keeps_the_audio(tmp_path, monkeypatch, capsys, content):
    clip = _write_clip(tmp_path / "pan.mp4", _panned(content, 4), audio_seconds=0.4)
    other_clip = _write_clip(tmp_path / "other.mp4", _panned(content.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 4))
    style, output, folder = str(EXAMPLES / "starry_night.jpg"), tmp_path / "out.mp4", tmp_path / "out.mp4.partial"
    _interrupted(monkeypatch, capsys, [str(clip), style, "-o", str(output), "--size", "64", "--steps", "1"], run=2)
    kept = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(kept) == ["frame-000001.png", "state.pt"]
    for arguments, said in [([str(clip), str(EXAMPLES / "graf1.jpg")], "was made from another clip or other style or mask images"),
                            ([str(other_clip), style], "was made from another clip or other style or mask images"),
                            ([str(clip), style, "--size", "96"], "these flags change them: --size (the checkpoint's: 64)"),
                            ([str(clip), style, "--fps", "5"], "these flags change them: --fps (the checkpoint's: 0)")]:
        with pytest.raises(SystemExit) as exit:
            cli([*arguments, "-o", str(output), "--resume", str(folder)])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert exit.value.code == 2 and said in line and line.endswith("nothing written"), line
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == kept and not output.exists()
    assert cli([str(clip), style, "-o", str(output), "--resume", str(folder)]) == 0
    with av.open(str(output)) as written, av.open(str(clip)) as given:
        assert written.streams.video[0].frames == 4
        copied = [bytes(packet) for packet in written.demux(written.streams.audio[0]) if packet.size]
        original = [bytes(packet) for packet in given.demux(given.streams.audio[0]) if packet.size]
    assert copied == original
    assert not folder.exists()


def _not_a_video(path):
    path.write_text("hello, not a clip\n")
    return path


def _empty(path):
    path.write_bytes(b"")
    return path


def _audio_only(path):
    with av.open(str(path), "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=8000)
        tone = av.AudioFrame.from_ndarray(numpy.zeros((1, 4000), numpy.float32), format="fltp", layout="mono")
        tone.sample_rate, tone.pts = 8000, 0
        output.mux(stream.encode(tone))
        output.mux(stream.encode(None))
    return path


def _truncated(path):
    _write_clip(path, [numpy.full((64, 64, 3), 10 * index, numpy.uint8) for index in range(4)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _frames_zeroed(path):
    """A whole index, but the frames' data zeroed: it opens, and its first frame does not decode."""
    _write_clip(path, [numpy.full((64, 64, 3), 10 * index, numpy.uint8) for index in range(4)])
    data = bytearray(path.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return path


REFUSED = {"not a video": (_not_a_video, "is not a video PyAV can read"), "empty": (_empty, "is empty"),
           "sound only": (_audio_only, "has no video stream"), "corrupted": (_truncated, "or it is corrupted"),
           "frames corrupted": (_frames_zeroed, "is corrupted at frame 1")}


@pytest.mark.parametrize("case", REFUSED)
def test_a_clip_that_cannot_be_read_is_refused_in_one_line_and_nothing_is_written(case, tmp_path, style, capsys):
    make, said = REFUSED[case]
    clip = make(tmp_path / "clip.mp4")
    with pytest.raises(VideoError, match=said):
        list(stylize_video(clip, style, Settings(size=64, steps=1)))
    output = tmp_path / "out.mp4"
    with pytest.raises(SystemExit) as exit:
        cli([str(clip), str(EXAMPLES / "starry_night.jpg"), "-o", str(output), "--size", "64", "--steps", "1"])
    error = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and said in error and "nothing written" in error and len(error.splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_variable_frame_rate_is_resampled_to_a_constant_one_on_the_timestamps(tmp_path):
    times = [0, 1, 3, 4, 5, 8, 9]  # tenths of a second: frames held twice and three times as long as others
    path = tmp_path / "variable.mp4"
    with av.open(str(path), "w", format="mp4") as output:
        video = output.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        for index, time in enumerate(times):
            frame = av.VideoFrame.from_ndarray(numpy.full((64, 64, 3), 30 * index, numpy.uint8), format="rgb24")
            frame.pts, frame.time_base = time, Fraction(1, 10)
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
    clip = Clip.open(path)
    shown = [round(float(numpy.asarray(frame)[..., 0].mean()) / 30) for frame in clip.frames()]
    # Each slot k, at k / rate, shows the latest frame shown by then, to the end of the last frame.
    slots = int((times[-1] / 10 + 1 / clip.input_rate) * clip.rate - 1e-9) + 1
    expected = [max(index for index, time in enumerate(times) if time / 10 <= k / clip.rate + 1e-9) for k in range(slots)]
    assert shown == expected and len(set(shown)) < len(shown) and len(set(shown)) < len(times)


def test_audio_that_mp4_cannot_hold_is_re_encoded_as_aac(tmp_path):
    path = tmp_path / "pcm.mkv"
    with av.open(str(path), "w", format="matroska") as output:
        video, audio = output.add_stream("libx264", rate=10), output.add_stream("pcm_s16le", rate=8000)
        video.width, video.height, video.pix_fmt, audio.layout = 64, 64, "yuv420p", "mono"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(numpy.full((64, 64, 3), 30 * index, numpy.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        wave = (numpy.sin(numpy.arange(4000) / 10) * 10000).astype(numpy.int16)[None]
        tone = av.AudioFrame.from_ndarray(wave, format="s16", layout="mono")
        tone.sample_rate, tone.pts = 8000, 0
        output.mux(audio.encode(tone))
        output.mux(audio.encode(None))
    clip = Clip.open(path)
    with ClipWriter(tmp_path / "out.mp4", clip.rate, audio_from=clip) as writer:
        for frame in clip.frames():
            writer.add(frame)
    with av.open(str(tmp_path / "out.mp4")) as written:
        stream = written.streams.audio[0]
        assert stream.codec_context.name == "aac"
        seconds = sum(frame.samples for frame in written.decode(stream)) / stream.codec_context.sample_rate
    assert seconds == pytest.approx(0.5, abs=0.2)  # AAC adds its encoder's priming and pads its last frame


def test_a_clip_stopped_early_keeps_the_sound_of_its_frames_only(tmp_path, content):
    clip = Clip.open(_write_clip(tmp_path / "pan.mp4", _panned(content, 10), audio_seconds=1.0))
    with ClipWriter(tmp_path / "out.mp4", clip.rate, audio_from=clip) as writer:
        for frame in list(clip.frames())[:4]:  # stopped after 4 of 10 frames: 0.4 s of picture
            writer.add(frame)
    with av.open(str(tmp_path / "out.mp4")) as written:
        audio = written.streams.audio[0]
        ends = [float((packet.pts + packet.duration) * audio.time_base) for packet in written.demux(audio) if packet.size]
    assert 0.4 <= max(ends) <= 0.4 + 2 * 1024 / 8000  # to the picture's end, within an AAC frame of 1024 samples or two


def test_a_writer_that_fails_leaves_nothing(tmp_path, content):
    with pytest.raises(RuntimeError), ClipWriter(tmp_path / "out.mp4", Fraction(10)) as writer:
        writer.add(content.resize((64, 48)))
        raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == []


def test_the_warping_error_ratio_is_one_for_the_input_and_large_for_a_flickering_clip(content):
    frames = [Image.fromarray(frame) for frame in _panned(content, 3)]
    assert temporal_consistency(frames, frames)["ratio"] == pytest.approx(1.0)
    noise = numpy.random.default_rng(0)
    flickering = [Image.fromarray(numpy.clip(numpy.asarray(frame, dtype=numpy.float64) + noise.normal(0, 20, (SIZE[1], SIZE[0], 3)),
                                             0, 255).astype(numpy.uint8)) for frame in frames]
    assert temporal_consistency(flickering, frames)["ratio"] > 5


def test_video_settings_are_checked():
    assert VideoSettings(later_steps=5.0).validated().later_steps == 5
    for wrong, said in [({"temporal_weight": -1}, "temporal_weight must be between 0"), ({"later_steps": -1}, "later_steps"),
                        ({"fps": "ten"}, "fps must be a number"), ({"later_steps": 2.5}, "whole")]:
        with pytest.raises(ValueError, match=said):
            VideoSettings(**wrong).validated()
