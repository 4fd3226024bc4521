"""bench_flops.py — the useful-FLOP count of a calibration pass, shared by the benchmark reports
(bench_report.py, bench_bf16_report.py): per block and token, the seven projections (2 x D x Q, 2 x
2 x D x KV, 2 x Q x D, 3 x 2 x D x m) and the causal attention products (QK^T and PV: 4 x H x hd
per attended position, T(T+1)/2 positions per sequence), over N sequences of T tokens."""


def useful_flops(res):
    """FLOPs of the calibration pass described by a results.json (model, calibration)"""
    m = res["model"]
    D, H, K, hd = m["hidden_size"], m["num_heads"], m["num_kv_heads"], m["head_dim"]
    Q, KV = H * hd, K * hd
    N, T = res["calibration"]["nsamples"], res["calibration"]["seqlen"]
    f = 0.0
    for ml in m["intermediate_sizes"]:
        f += T * 2.0 * (D * Q + 2 * D * KV + Q * D + 3 * D * ml) + 4.0 * H * hd * T * (T + 1) / 2
    return N * f
