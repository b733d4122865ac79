"""Mixed precision (``amp``) on the CPU, and the CUDA path (skipped without a GPU)."""
import os

import pytest
import torch

from mbgraph.data.adjacency import BehaviorAdjacency
from mbgraph.data.datasets import synthetic
from mbgraph.models import MODELS, build_model
from mbgraph.training import Trainer, move_to
from mbgraph_seq.data import SequenceDataset
from mbgraph_seq.models import SEQ_MODELS
from mbgraph_seq.nn.filter import EfficientFilterLayer
from mbgraph_seq.nn.prompts import coding_rate

#: the models that train (the training-free baselines have no loss and no parameters)
TRAINABLE = sorted(n for n in MODELS if getattr(MODELS[n], 'trainable', True))


def needs_cuda(test):
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(),
                                               reason='needs a CUDA device')(test))


@pytest.fixture(scope='module')
def data():
    return synthetic(num_users=150, num_items=100, seed=1)


def test_sparse_propagation_stays_float32_under_autocast(data):
    op = BehaviorAdjacency(data).operator(data.behaviors, 'symmetric')
    x = torch.randn(op.shape[1], 8)
    plain = op @ x
    with torch.autocast('cpu', dtype=torch.bfloat16):
        lowp = x.to(torch.bfloat16)
        y = op @ x
        y_low = op @ lowp
    assert y.dtype == torch.float32 and torch.equal(y, plain)
    # a bfloat16 input (e.g. a Linear's output under autocast) is upcast, not rejected
    assert y_low.dtype == torch.float32
    torch.testing.assert_close(y_low, op @ lowp.float())
    # outside autocast a dtype mismatch is still an error that says what to do
    with pytest.raises(ValueError, match='dtype'):
        op @ lowp


def test_fft_filter_and_coding_rate_run_in_float32_under_autocast():
    torch.manual_seed(0)
    layer = EfficientFilterLayer(8, num_blocks=2, dropout=0.0)
    x = torch.randn(3, 6, 8)
    ref = layer.filter(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = layer.filter(x)
        got_low = layer.filter(x.to(torch.bfloat16))
        rate = coding_rate(torch.randn(5, 4).to(torch.bfloat16), eps2=0.5)
    assert got.dtype == torch.float32 and torch.equal(got, ref)
    assert got_low.dtype == torch.float32
    assert rate.dtype == torch.float32 and torch.isfinite(rate)


@pytest.mark.parametrize('name', TRAINABLE)
def test_every_graph_model_trains_under_cpu_autocast(name, data):
    torch.manual_seed(0)
    model = build_model(name, data, embedding_dim=16)
    source = model.batch_source(data, batch_size=256, seed=0)
    batch = next(iter(source.batches(1)))
    model.train()
    full = model.loss(batch)
    full = full[0] if isinstance(full, tuple) else full
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = model.loss(batch)
    low = low[0] if isinstance(low, tuple) else low
    assert torch.isfinite(low)
    # bfloat16 keeps ~3 significant digits: the loss agrees to a few percent
    assert float(low.detach()) == pytest.approx(float(full.detach()), rel=5e-2)
    trainer = Trainer(model, source, epochs=1, amp=True, progress=False)
    trainer.fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize('amp', [False, True])
def test_cpu_trainers_turn_the_onednn_shape_caches_off(data, monkeypatch, amp):
    """CPU products run through oneDNN, which caches a kernel per input shape; varying batch
    shapes grow that without bound (bf16 and float32 alike), so a CPU trainer sets both
    caches to off unless the environment sizes them."""
    for name in ('LRU_CACHE_CAPACITY', 'ONEDNN_PRIMITIVE_CACHE_CAPACITY'):
        monkeypatch.setenv(name, 'unset')       # restored (removed) after the test
        monkeypatch.delenv(name)
    model = build_model('lightgcn', data, embedding_dim=8)
    source = model.batch_source(data, batch_size=256, seed=0)
    Trainer(model, source, epochs=1, amp=amp, progress=False)
    assert os.environ['LRU_CACHE_CAPACITY'] == '1'
    assert os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'] == '0'
    monkeypatch.setenv('LRU_CACHE_CAPACITY', '8')          # a user's own setting is kept
    Trainer(model, source, epochs=1, amp=amp, progress=False)
    assert os.environ['LRU_CACHE_CAPACITY'] == '8'


@pytest.mark.parametrize('name', sorted(SEQ_MODELS))
def test_every_sequence_model_trains_under_cpu_autocast(name):
    from mbgraph_seq.train import train_sequence_model
    ds = SequenceDataset.synthetic(num_users=60, num_items=40, max_len=12, seed=0)
    metrics = train_sequence_model(name, ds, epochs=1, progress=False, amp=True, dim=16,
                                   num_negatives_eval=20)   # < the 40 items
    assert 0.0 <= metrics['test']['hr@10'] <= 1.0


# ---------------------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.parametrize('name', TRAINABLE)
@pytest.mark.parametrize('amp', [False, True])
def test_graph_models_on_cuda_match_cpu(name, amp, data):
    torch.manual_seed(0)
    cpu = build_model(name, data, embedding_dim=16)
    gpu = build_model(name, data, embedding_dim=16)
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    batch = next(iter(cpu.batch_source(data, batch_size=256, seed=0).batches(1)))
    ref = cpu.loss(batch)
    with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
        got = gpu.loss(move_to(batch, torch.device('cuda')))
    ref = ref[0] if isinstance(ref, tuple) else ref
    got = got[0] if isinstance(got, tuple) else got
    assert float(got) == pytest.approx(float(ref), rel=5e-2 if amp else 1e-4)
    # the operators went to the GPU once and stay CSR there (cuSPARSE)
    ops = list(gpu.adjacency._cache.values())
    assert ops and all(op.csr.device.type == 'cuda' and op.csr.layout == torch.sparse_csr and
                       op.csr_t.device.type == 'cuda' for op in ops)
    trainer = Trainer(gpu, gpu.batch_source(data, batch_size=256, seed=0), epochs=1,
                      device='cuda', amp=amp, progress=False)
    trainer.fit()
    assert all(p.device.type == 'cuda' and torch.isfinite(p).all() for p in gpu.parameters())


@needs_cuda
def test_no_host_to_device_copies_inside_training_steps(data):
    """Between two loss read-backs (``sync_every`` steps) a training step queues kernels only:
    the epoch's triples went to the device once, before the first step."""
    from torch.profiler import ProfilerActivity, profile
    torch.manual_seed(0)
    model = build_model('lightgcn', data, embedding_dim=16)
    source = model.batch_source(data, batch_size=32, seed=0)
    trainer = Trainer(model, source, epochs=1, device='cuda', progress=False, sync_every=1000)
    batches = list(trainer._epoch_batches(1))
    assert all(t.device.type == 'cuda' for b in batches for t in b.values())
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for batch in batches[1:4]:
            loss = trainer.loss_module(move_to(batch, trainer.device))
            loss = loss[0] if isinstance(loss, tuple) else loss
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
        torch.cuda.synchronize()
    copies = [e.name for e in prof.events() if 'Memcpy HtoD' in e.name or 'Memcpy DtoH' in e.name]
    assert copies == []
