import pytest
import torch

from frugalformers.bench import profile_step
from frugalformers.bench.profile import category


@pytest.mark.parametrize(
    "name,expected",
    [
        ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTN", "GEMM"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "GEMM"),
        ("triton_tem_fused_addmm_0", "GEMM"),
        ("aten::bmm", "GEMM"),
        ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
        ("fmha_cutlassB_bf16_aligned_64x64_k64_sm80", "attention"),
        ("void vector_fft<512u, 8u, 64u>(kernel_arguments_t)", "FFT"),
        ("aten::_fft_r2c", "FFT"),
        ("void at::native::sbtopk::gatherTopK<float, unsigned int, 2, false>", "sort / top-k"),
        ("void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16>", "gather / scatter"),
        ("triton_poi_fused_add_mul_0", "fused (Inductor)"),
        ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>", "reduction / norm"),
        ("Memcpy DtoD (Device -> Device)", "copy / cast"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "elementwise"),
        ("coor_descent_kernel_forward", "other"),
    ],
)
def test_kernel_categories(name, expected):
    assert category(name) == expected


def test_profile_step_sums_per_step_time_by_category():
    x = torch.randn(32, 64, 64, requires_grad=True)
    w = torch.randn(64, 64, requires_grad=True)
    calls = []

    def step():
        calls.append(1)
        (torch.fft.fft2(x).real @ w).softmax(-1).sum().backward()

    prof = profile_step(step, "cpu", steps=2, warmup=1)
    assert len(calls) == 3 and prof.steps == 2 and prof.device == "cpu"
    assert {"GEMM", "FFT"} <= set(prof.by_category)
    assert prof.busy_ms == pytest.approx(sum(ms for _, _, ms in prof.kernels))
    # aten::mm runs once forward and twice backward per step: calls are per step, not per profile
    mm = [calls for name, calls, _ in prof.kernels if name == "aten::mm"]
    assert mm == [3.0]
    md = prof.markdown("fft then matmul")
    assert "fft then matmul" in md and "| GEMM" in md and "all kernels" in md
    with pytest.raises(ValueError, match="steps=0"):
        profile_step(step, "cpu", steps=0)
