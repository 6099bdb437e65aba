"""The reference model against first principles and against the original checkpoint format."""
import math

import pytest
import torch
import torch.nn.functional as F

from ecg_jepa import (
    JEPA,
    LEADS,
    CroPAAttention,
    Encoder,
    EncoderConfig,
    explain_backend,
    load_encoder,
    save_encoder,
    use_backend,
)
from ecg_jepa.errors import InputError
from ecg_jepa.model.checkpoint import infer_config
from ecg_jepa.model.masks import multiblock_mask, random_mask
from ecg_jepa.model.posenc import sincos_2d
from ecg_jepa.ops.layout import check_slot_mask, cropa_mask
from ecg_jepa.ops.setting import ENV, current_backend


def original_forward(state: dict, x: torch.Tensor, leads: list[int], num_heads: int) -> torch.Tensor:
    """The original ECG-JEPA encoder's math, written straight from an original-format state dict:
    patches -> W_P; before every block add pos rows; pre-LN blocks with a dense CroPA mask; final LN."""
    b, n_leads, _ = x.shape
    dim = state["W_P.weight"].shape[0]
    tokens = F.linear(x.reshape(b, n_leads * 50, 50), state["W_P.weight"], state["W_P.bias"])
    pos = state["pos_embed"].reshape(8, 50, dim)[leads].reshape(n_leads * 50, dim)
    lead_id = torch.tensor(leads).repeat_interleave(50)
    slot_id = torch.arange(50).repeat(n_leads)
    allowed = (lead_id[:, None] == lead_id[None, :]) | (slot_id[:, None] == slot_id[None, :])
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder_blocks."))
    for i in range(depth):
        p = lambda name: state[f"encoder_blocks.blocks.{i}.{name}"]  # noqa: E731
        h = tokens + pos
        a = F.layer_norm(h, (dim,), p("norm1.weight"), p("norm1.bias"))
        qkv = F.linear(a, p("attn.qkv.weight")).reshape(b, -1, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
        s = (qkv[0] @ qkv[1].transpose(-1, -2)) / math.sqrt(dim // num_heads)
        att = s.masked_fill(~allowed, float("-inf")).softmax(-1) @ qkv[2]
        h = h + F.linear(att.transpose(1, 2).reshape(b, -1, dim), p("attn.proj.weight"), p("attn.proj.bias"))
        m = F.layer_norm(h, (dim,), p("norm2.weight"), p("norm2.bias"))
        m = F.linear(F.gelu(F.linear(m, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        tokens = h + m
    return F.layer_norm(tokens, (dim,), state["norm.weight"], state["norm.bias"])


def random_state(encoder: Encoder) -> dict:
    """The encoder's state dict with every trainable tensor redrawn (not the init's structure)."""
    return {k: (v if k == "pos_embed" else torch.randn_like(v) * 0.1) for k, v in encoder.state_dict().items()}


def test_sincos_table_matches_formula():
    dim = 32
    table = sincos_2d(dim, 8, 50).double()
    for lead in (0, 3, 7):
        for slot in (0, 17, 49):
            row = table[lead * 50 + slot]
            for i in range(dim // 4):
                w = 10000 ** (-i / (dim / 4))
                expect = [math.sin(slot * w), math.cos(slot * w), math.sin(lead * w), math.cos(lead * w)]
                got = [row[i], row[dim // 4 + i], row[dim // 2 + i], row[3 * dim // 4 + i]]
                assert torch.allclose(torch.tensor(got, dtype=torch.float64), torch.tensor(expect, dtype=torch.float64), atol=1e-6)


def test_cropa_mask_follows_rule():
    n_leads, t = 3, 4
    mask = cropa_mask(n_leads, t)
    for i in range(n_leads * t):
        for j in range(n_leads * t):
            assert bool(mask[i, j]) == (i // t == j // t or i % t == j % t)


def test_random_and_multiblock_masks(seed):
    for _ in range(20):
        m = random_mask()
        assert m.shape == (50,) and m.dtype == torch.bool and int(50 * 0.6) <= m.sum() <= int(50 * 0.7)
        m = multiblock_mask()
        assert int(50 * 0.175) <= m.sum() <= 4 * int(50 * 0.225) and not m.all()


def test_slot_mask_errors():
    with pytest.raises(ValueError, match=r"shape \(50,\)"):
        check_slot_mask(torch.zeros(49, dtype=torch.bool), 2)
    with pytest.raises(TypeError, match="bool"):
        check_slot_mask(torch.zeros(50), 2)
    uneven = torch.zeros(2, 50, dtype=torch.bool)
    uneven[0, :3] = True
    with pytest.raises(ValueError, match="same number"):
        check_slot_mask(uneven, 2)
    with pytest.raises(ValueError, match="every time slot"):
        check_slot_mask(torch.ones(50, dtype=torch.bool), 2)


def write_original(path, state):
    torch.save({"encoder": state, "epoch": 7}, path)


def test_original_format_checkpoint_reproduces_original_math(tmp_path, seed):
    enc = Encoder(EncoderConfig(dim=96, depth=2, num_heads=2))
    state = random_state(enc)
    write_original(tmp_path / "orig.pth", state)
    loaded = load_encoder(tmp_path / "orig.pth")
    assert loaded.config.num_heads == 2 and loaded.config.depth == 2 and not loaded.training
    x = torch.randn(3, 8, 2500)
    with torch.no_grad():
        got = loaded(x)
    assert (got - original_forward(state, x, list(range(8)), 2)).abs().max() <= 1e-5
    enc.load_state_dict(state)
    assert torch.equal(got, enc.eval()(x).detach())


def test_reduced_leads_any_order(tmp_path, seed):
    enc = Encoder(EncoderConfig(dim=48, depth=1, num_heads=1))
    state = random_state(enc)
    write_original(tmp_path / "orig.pth", state)
    leads = ["V6", "i", "V2"]
    loaded = load_encoder(tmp_path / "orig.pth", leads=leads)
    x = torch.randn(2, 3, 2500)
    with torch.no_grad():
        got = loaded(x)
    assert (got - original_forward(state, x, [7, 0, 3], 1)).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="built for 3"):
        loaded(torch.randn(2, 8, 2500))
    with pytest.raises(ValueError, match="unknown lead 'aVX'"):
        load_encoder(tmp_path / "orig.pth", leads=["aVX"])


def test_vit_b_has_the_released_137_keys():
    config = JEPA("vit-b").encoder.config
    keys = Encoder(config).state_dict()
    assert len(keys) == 137 and config.dim // config.num_heads == 48
    assert keys["pos_embed"].shape == (400, 768) and keys["W_P.weight"].shape == (768, 50)
    assert "encoder_blocks.blocks.11.attn.qkv.weight" in keys and "encoder_blocks.blocks.0.attn.qkv.bias" not in keys
    assert infer_config(keys) == config


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.pop("norm.bias"), "missing key 'norm.bias'"),
    (lambda s: s.__setitem__("head.weight", torch.zeros(2)), "unexpected key 'head.weight'"),
    (lambda s: s.__setitem__("norm.bias", torch.zeros(5)), "'norm.bias' has shape"),
    (lambda s: s.pop("pos_embed"), "'pos_embed' is missing"),
])
def test_strict_loading_names_the_key(tmp_path, edit, match):
    state = Encoder(EncoderConfig(dim=48, depth=1, num_heads=1)).state_dict()
    edit(state)
    write_original(tmp_path / "bad.pth", state)
    with pytest.raises(ValueError, match=match):
        load_encoder(tmp_path / "bad.pth")


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_encoder(tmp_path / "junk.pt")


def test_backend_is_a_runtime_setting_not_a_checkpoint_field(tmp_path, monkeypatch):
    """A checkpoint written while the setting was triton, and an older one whose config names triton, load
    and run with auto where triton cannot run (a CPU without the Triton interpreter)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for variable in ENV.values():
        monkeypatch.delenv(variable, raising=False)
    enc = Encoder(EncoderConfig(dim=32, depth=1, num_heads=2)).eval()
    with use_backend(attention="triton", embed="triton"):
        save_encoder(enc, tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    assert not {"attn_backend", "embed_backend"} & set(payload["config"])
    payload["config"].update(attn_backend="triton", embed_backend="triton")  # as written before the setting
    torch.save(payload, tmp_path / "old.pt")
    x = torch.randn(2, 8, 2500)
    with use_backend(attention="reference"):
        expect = enc(x)
    for name in ("new.pt", "old.pt"):
        loaded = load_encoder(tmp_path / name)
        assert current_backend("attention") == current_backend("embed") == "auto"
        assert all(m.backend is None for m in loaded.modules() if isinstance(m, CroPAAttention))
        assert (loaded(x) - expect).abs().max() < 1e-5
    with use_backend(attention="triton"), pytest.raises(InputError, match="'triton' cannot run here"):
        loaded(x)  # what an encoder that kept the writer's choice would have met


def test_backend_setting_precedence(monkeypatch):
    """A module's own backend, then use_backend (restored on exit), then the environment, then auto."""
    monkeypatch.setenv(ENV["attention"], "sdpa")
    q = torch.randn(1, 2, 8, 4)
    assert "backend='sdpa' -> 'sdpa'" in explain_backend(q, n_leads=2)
    with use_backend(attention="reference"):
        assert "backend='reference' -> 'reference'" in explain_backend(q, n_leads=2)
        with use_backend(embed="reference"):
            assert current_backend("attention") == "reference"
        with pytest.raises(InputError, match="unknown CroPA attention backend 'nonesuch'"):
            CroPAAttention(8, 2, backend="nonesuch")(torch.randn(1, 4, 8), 2)
    assert current_backend("attention") == "sdpa"
    with use_backend(attention="nonesuch"):
        CroPAAttention(8, 2, backend="reference")(torch.randn(1, 4, 8), 2)


def test_own_format_round_trip(tmp_path, seed):
    enc = Encoder(EncoderConfig(dim=64, depth=1, num_heads=4, leads=(1, 0))).eval()
    save_encoder(enc, tmp_path / "enc.pt")
    loaded = load_encoder(tmp_path / "enc.pt")
    assert loaded.config.leads == (1, 0)
    x = torch.randn(2, 2, 2500)
    assert torch.equal(loaded(x), enc(x))


def test_masked_forward_keeps_visible_tokens_in_order(seed):
    enc = Encoder(EncoderConfig(dim=32, depth=1, num_heads=2, leads=(0, 1, 2))).eval()
    x = torch.randn(2, 3, 2500)
    mask = random_mask()
    visible = (~mask).nonzero().squeeze(1)
    out = enc(x, mask=mask)
    assert out.shape == (2, 3 * len(visible), 32)
    # A masked forward equals the original math on the visible slots alone (CroPA among them, own pos rows).
    state = enc.state_dict()
    patches = x.reshape(2, 3, 50, 50)[:, :, visible]
    tokens = F.linear(patches, state["W_P.weight"], state["W_P.bias"]).flatten(1, 2)
    pos = state["pos_embed"].reshape(8, 50, 32)[:3][:, visible].flatten(0, 1)
    blk = enc.encoder_blocks.blocks[0]
    blk.attn.backend = "reference"
    expect = enc.norm(blk(tokens + pos, 3))
    assert (out - expect).abs().max() < 1e-5
    # Per-sample masks with identical rows give the shared-mask result.
    assert (enc(x, mask=mask.expand(2, 50)) - out).abs().max() < 1e-6


def test_per_sample_masks_select_each_rows_slots(seed):
    enc = Encoder(EncoderConfig(dim=32, depth=1, num_heads=2, leads=(0, 1))).eval()
    x = torch.randn(2, 2, 2500)
    masks = torch.stack([random_mask(), random_mask()])
    masks[1] = masks[0].roll(5)
    out = enc(x, mask=masks)
    for i in range(2):
        assert (out[i] - enc(x[i : i + 1], mask=masks[i])[0]).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["structured", "sdpa", "triton", "split"])
def test_model_backends_match_reference(seed, backend, kernel_device):
    torch.manual_seed(seed)
    ref = JEPA("tiny")
    torch.manual_seed(seed)
    dev = kernel_device if backend in ("triton", "split") else "cpu"
    other = JEPA("tiny").to(dev)
    x, mask = torch.randn(2, 8, 2500), multiblock_mask()
    with use_backend(attention="reference"):
        loss_ref = ref.loss(x, mask)
        loss_ref.backward()
    with use_backend(attention=backend, embed="triton" if backend == "triton" else "auto"):
        loss = other.loss(x.to(dev), mask)
        loss.backward()
    assert abs(loss.item() - loss_ref.item()) < 1e-5
    for (name, a), b in zip(ref.named_parameters(), other.parameters()):
        if a.grad is not None:
            assert (a.grad - b.grad.cpu()).abs().max() < 1e-4, name


def test_gradients_flow_to_student_and_predictor_only(seed):
    model = JEPA("tiny")
    loss = model.loss(torch.randn(2, 8, 2500), multiblock_mask())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters() if p.requires_grad)
    assert all(p.grad is not None for p in model.predictor.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.target_encoder.parameters())


def test_ema_update(seed):
    model = JEPA("tiny")
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [t.clone() for t in model.target_encoder.parameters()]
    model.update_teacher(0.9)
    for t0, t, s in zip(before, model.target_encoder.parameters(), model.encoder.parameters()):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * s, atol=1e-6)


def test_loss_targets_are_the_teachers_hidden_tokens(seed):
    """With the predictor replaced by an oracle that returns the targets, the loss is zero; any other
    ordering of hidden slots is not."""
    model = JEPA("tiny").eval()
    x, mask = torch.randn(2, 8, 2500), multiblock_mask()
    with torch.no_grad():
        h = model.target_encoder(x)
        h = F.layer_norm(h, h.shape[-1:]).reshape(2, 8, 50, -1)[:, :, mask].flatten(1, 2)
    model.predictor.forward = lambda z, m, n: h
    assert model.loss(x, mask).item() == 0.0
    model.predictor.forward = lambda z, m, n: h.flip(1)
    assert model.loss(x, mask).item() > 0.0


@pytest.mark.parametrize("x,error,match", [
    (torch.randn(2, 7, 2500), ValueError, "7 leads"),
    (torch.randn(2, 8, 2000), ValueError, "2000 samples"),
    (torch.randn(8, 2500), ValueError, "batch, leads"),
    (torch.ones(2, 8, 2500, dtype=torch.int64), TypeError, "float"),
    (torch.full((2, 8, 2500), float("nan")), ValueError, "NaN"),
])
def test_bad_ecg_input(x, error, match):
    with pytest.raises(error, match=match):
        Encoder(EncoderConfig(dim=32, depth=1, num_heads=2))(x)


def test_leads_constant():
    assert LEADS == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
