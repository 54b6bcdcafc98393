"""A PyTorch reference of the SAME GenGait MAE, timed like the JAX one (torch is optional).

Same widths, depths, heads, MLP ratio, pre-LN blocks with fused QKV and
`F.scaled_dot_product_attention`, the encoder on the visible tokens gathered into the same
slot counts (padding slots masked out of attention), the same decoder over all N tokens, tanh
GELU and LayerNorm eps 1e-6 like flax, the linear body prior where the config has one, the
factorized attention where the config asks for it (with the JAX model's rules for running
the encoder on the token grid and gathering only the query rows' keys). Training: the same
random/joint mask mixture, masked MSE over the rows the loss reads (the decoder's last block
computes only those, as in JAX), global-norm clipping and AdamW. Scoring: all J occlusion
masks of B strides, joint j's rows decoded in mask j (as in JAX), the best of one call and
chunks of one or two strides' J masks (the JAX rows+chunk program's chunking).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gengait_jax import model as model_lib, scoring


class Block(nn.Module):
    """Pre-LN Transformer block with fused QKV and fused attention (full, or factorized over
    joints and time like the JAX model's `factorized`)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, num_joints: int = 0):
        super().__init__()
        self.heads, self.num_joints = heads, num_joints  # num_joints > 0: factorized
        self.ln1, self.ln2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x_bnd: torch.Tensor, key_mask_b11k: torch.Tensor | None = None,
                query_bq: torch.Tensor | None = None, grid: tuple | None = None):
        """Attention (keys where key_mask is False ignored; factorized: the keys of `grid`) and
        the MLP; rows query_bq only."""
        b, n, d = x_bnd.shape
        qkv = self.qkv(self.ln1(x_bnd)).view(b, n, 3, self.heads, d // self.heads)
        if self.num_joints and query_bq is not None and grid[1] is None and (
                query_bq.shape[1] <= model_lib.QUERY_ROWS_SHARE * n):
            att = _query_attention(qkv, query_bq, grid[2], self.num_joints)
        elif self.num_joints:
            att = _grid_attention(qkv, grid, self.num_joints)  # [B, H, rows, D]
            if query_bq is not None:
                att = att.gather(2, query_bq[:, None, :, None].expand(
                    -1, att.shape[1], -1, att.shape[3]))
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            if query_bq is not None:  # like the JAX Block: queries of the rows read, keys of all
                q = q.gather(2, query_bq[:, None, :, None].expand(-1, q.shape[1], -1, q.shape[3]))
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask_b11k)
        if query_bq is not None:
            x_bnd = x_bnd.gather(1, query_bq[..., None].expand(-1, -1, d))
        x_bnd = x_bnd + self.out(att.transpose(1, 2).reshape(x_bnd.shape))
        return x_bnd + self.fc2(F.gelu(self.fc1(self.ln2(x_bnd)), approximate="tanh"))


def _grid_attention(qkv_bn3hd: torch.Tensor, grid: tuple, num_joints: int) -> torch.Tensor:
    """Factorized attention of rows laid out by grid = (keep_idx [B, K] | None, restore [B, N] |
    None, keys [B, N] | None): scattered onto the joint-major token grid, the first half of
    the heads across joints within a time patch, the second half across time within a joint,
    gathered back: [B, H, rows, D]. Einsums and a masked softmax, like the JAX model: on the
    2-core CPU 10 % faster over the demo step's attention calls than
    `scaled_dot_product_attention` on the [B, P, H/2, J, D] / [B, J, H/2, P, D] views
    (BUILD_NOTES "Factorized attention")."""
    keep, restore, keys = grid
    b, k, _, h, d = qkv_bn3hd.shape
    if restore is not None:
        pad = qkv_bn3hd.new_zeros(b, restore.shape[1] - k, 3, h, d)
        qkv_bn3hd = torch.cat([qkv_bn3hd, pad], 1).gather(
            1, restore[:, :, None, None, None].expand(-1, -1, 3, h, d))
    n = qkv_bn3hd.shape[1]
    p, hs = n // num_joints, h // 2
    q, kk, v = qkv_bn3hd.view(b, num_joints, p, 3, h, d).unbind(3)
    q = q * d ** -0.5
    across_joints = torch.einsum("bjphd,bkphd->bphjk", q[..., :hs, :], kk[..., :hs, :])
    across_time = torch.einsum("bjphd,bjqhd->bjhpq", q[..., hs:, :], kk[..., hs:, :])
    if keys is not None:  # finite fill: a row without keys averages, no NaN (it is dropped)
        kv = keys.view(b, num_joints, p)
        across_joints = across_joints.masked_fill(~kv.transpose(1, 2)[:, :, None, None, :], -1e30)
        across_time = across_time.masked_fill(~kv[:, :, None, None, :], -1e30)
    att = torch.cat([torch.einsum("bphjk,bkphd->bhjpd", across_joints.softmax(-1), v[..., :hs, :]),
                     torch.einsum("bjhpq,bjqhd->bhjpd", across_time.softmax(-1), v[..., hs:, :])],
                    1).reshape(b, h, n, d)
    if keep is not None:
        att = att.gather(2, keep[:, None, :, None].expand(-1, h, -1, d))
    return att


def _query_attention(qkv_bn3hd: torch.Tensor, query_bq: torch.Tensor, keys: torch.Tensor | None,
                     num_joints: int) -> torch.Tensor:
    """`model.query_attention`: factorized attention of the rows query_bq [B, Q] only, each
    row's J keys of its time patch and P keys of its joint gathered: [B, H, Q, D]."""
    b, n, _, h, d = qkv_bn3hd.shape
    p, hs = n // num_joints, h // 2
    q = qkv_bn3hd[:, :, 0].gather(1, query_bq[:, :, None, None].expand(-1, -1, h, d)) * d ** -0.5
    kv = qkv_bn3hd[:, :, 1:].reshape(b, num_joints, p, 2, h, d)
    joint_q, patch_q = query_bq // p, query_bq % p
    qn = query_bq.shape[1]
    kv_j = kv[..., :hs, :].gather(2, patch_q[:, None, :, None, None, None].expand(
        -1, num_joints, -1, 2, hs, d))  # [B, J, Q, 2, H/2, D]
    kv_t = kv[..., hs:, :].gather(1, joint_q[:, :, None, None, None, None].expand(
        -1, -1, p, 2, hs, d))  # [B, Q, P, 2, H/2, D]
    across_joints = torch.einsum("bqhd,bkqhd->bqhk", q[:, :, :hs], kv_j[:, :, :, 0])
    across_time = torch.einsum("bqhd,bqphd->bqhp", q[:, :, hs:], kv_t[:, :, :, 0])
    if keys is not None:
        kb = keys.view(b, num_joints, p)
        keep_j = kb.gather(2, patch_q[:, None, :].expand(-1, num_joints, -1)).transpose(1, 2)
        keep_t = kb.gather(1, joint_q[:, :, None].expand(-1, -1, p))
        across_joints = across_joints.masked_fill(~keep_j[:, :, None], -1e30)
        across_time = across_time.masked_fill(~keep_t[:, :, None], -1e30)
    att = torch.cat([torch.einsum("bqhk,bkqhd->bqhd", across_joints.softmax(-1), kv_j[:, :, :, 1]),
                     torch.einsum("bqhp,bqphd->bqhd", across_time.softmax(-1), kv_t[:, :, :, 1])],
                    2)
    return att.view(b, qn, h, d).transpose(1, 2)


class TorchMAE(nn.Module):
    """GenGaitMAE in PyTorch: encoder on K visible slots, decoder over all N tokens."""

    def __init__(self, m, *, num_frames: int, num_joints: int, num_channels: int):
        super().__init__()
        self.num_patches = num_frames // m.patch
        p, dw = self.num_patches, m.dec_width
        init = lambda *s: nn.Parameter(torch.randn(*s) * 0.02)
        self.embed = nn.Linear(m.patch * num_channels, m.width)
        self.joint_emb, self.time_emb = init(num_joints, m.width), init(p, m.width)
        self.num_joints = num_joints
        self.factorized = bool(m.get("factorized", False))
        grid_j = num_joints if self.factorized else 0
        self.encoder = nn.ModuleList(Block(m.width, m.heads, m.mlp_ratio, grid_j)
                                     for _ in range(m.depth))
        self.enc_norm = nn.LayerNorm(m.width, eps=1e-6)
        self.dec_embed = nn.Linear(m.width, dw)
        self.mask_token = init(dw)
        self.dec_joint_emb, self.dec_time_emb = init(num_joints, dw), init(p, dw)
        self.decoder = nn.ModuleList(Block(dw, m.dec_heads, m.mlp_ratio, grid_j)
                                     for _ in range(m.dec_depth))
        self.dec_norm = nn.LayerNorm(dw, eps=1e-6)
        self.head = nn.Linear(dw, m.patch * num_channels)
        self.patch = m.patch
        if m.get("linear_prior", False):  # the JAX model's linear body prior (not trained)
            self.register_buffer("prior_w", torch.zeros(
                num_joints, num_joints * p * num_channels, p * m.patch * num_channels))
            self.register_buffer("prior_b", torch.zeros(num_joints, p * m.patch * num_channels))
        else:
            self.prior_w = None

    @staticmethod
    def _pos(joint_emb, time_emb):
        """Joint + time embedding per token [N, D], joint-major."""
        return (joint_emb[:, None] + time_emb[None]).reshape(-1, joint_emb.shape[-1])

    def forward(self, tokens_bnd, visible_bn, num_keep: int, query_bq=None):
        """Predicts all tokens [B, N, D] (or rows query_bq, decoded by the last block only)
        from the visible ones (at most num_keep per row)."""
        b, n, d_in = tokens_bnd.shape
        if self.factorized and num_keep >= model_lib.GRID_ENCODER_SHARE * n:
            y = self._encode_grid(tokens_bnd, visible_bn)
            y = torch.where(visible_bn[..., None], y, self.mask_token)
            return self._decode(y, tokens_bnd, visible_bn, query_bq)
        order = torch.argsort((~visible_bn).to(torch.int8), dim=-1, stable=True)
        restore = torch.argsort(order, dim=-1, stable=True)
        keep = order[:, :num_keep]
        keep_valid = visible_bn.gather(1, keep)
        keep_valid[:, 0] = True  # like the JAX model's kv_len >= 1: no empty softmax
        tok = tokens_bnd.gather(1, keep[..., None].expand(-1, -1, d_in)) * keep_valid[..., None]
        x = self.embed(tok) + self._pos(self.joint_emb, self.time_emb)[keep]
        key_mask = keep_valid[:, None, None, :]
        grid = (keep, restore, visible_bn)
        for blk in self.encoder:
            x = blk(x, key_mask, None, grid)
        y = self.dec_embed(self.enc_norm(x))
        dw = y.shape[-1]
        y = torch.where(keep_valid[..., None], y, self.mask_token)
        y = torch.cat([y, self.mask_token.expand(b, n - num_keep, dw)], dim=1)
        y = y.gather(1, restore[..., None].expand(-1, -1, dw))
        return self._decode(y, tokens_bnd, visible_bn, query_bq)

    def _encode_grid(self, tokens_bnd, visible_bn):
        """`GenGaitMAE._encode_grid`: the encoder on the whole token grid (hidden tokens zeroed,
        never keys), then the decoder's embedding [B, N, dec width]."""
        tok = torch.where(visible_bn[..., None], tokens_bnd, 0.0)
        x = self.embed(tok) + self._pos(self.joint_emb, self.time_emb)
        for blk in self.encoder:
            x = blk(x, None, None, (None, None, visible_bn))
        return self.dec_embed(self.enc_norm(x))

    def _decode(self, y, tokens_bnd, visible_bn, query_bq):
        """The decoder over the N tokens in token order (rows query_bq), plus the prior."""
        d_in = tokens_bnd.shape[-1]
        y = y + self._pos(self.dec_joint_emb, self.dec_time_emb)
        for i, blk in enumerate(self.decoder):
            y = blk(y, None, query_bq if i == len(self.decoder) - 1 else None,
                    (None, None, None))
        out = self.head(self.dec_norm(y))
        if self.prior_w is None:
            return out
        prior = self._prior(tokens_bnd, visible_bn)
        if query_bq is not None:
            prior = prior.gather(1, query_bq[..., None].expand(-1, -1, d_in))
        return out + prior

    def _prior(self, tokens_bnd, visible_bn):
        """GenGaitMAE.prior: the ridge prediction of every fully hidden joint from the patch
        means of the other joints' visible tokens [B, N, D] (0 elsewhere)."""
        b, n, d_in = tokens_bnd.shape
        j, p = self.num_joints, self.num_patches
        vis = visible_bn.view(b, j, p)
        f = torch.where(vis[..., None], tokens_bnd.view(b, j, p, self.patch, -1).mean(3), 0.0)
        keep_bjk = ~torch.eye(j, dtype=torch.bool)[None] & vis.any(-1)[:, None, :]
        feats = (f[:, None] * keep_bjk[..., None, None]).reshape(b, j, -1)
        pred = torch.einsum("bjf,jfo->bjo", feats, self.prior_w) + self.prior_b
        return torch.where(~vis.any(-1)[..., None], pred, 0.0).reshape(b, n, d_in)


def create(cfg, shape: dict, seed: int = 0) -> TorchMAE:
    """The reference model of cfg.model for strides of `shape`."""
    torch.manual_seed(seed)
    return TorchMAE(cfg.model, **shape)


def num_params(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def patchify(x_btjc: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, T, J, C] -> [B, J * T/patch, patch * C], joint-major like masking.patchify."""
    b, t, j, c = x_btjc.shape
    x = x_btjc.reshape(b, t // patch, patch, j, c).permute(0, 3, 1, 2, 4)
    return x.reshape(b, j * (t // patch), patch * c)


def random_visible(b: int, n: int, num_keep: int, gen) -> torch.Tensor:
    """Exactly num_keep random visible tokens per row: [B, N] bool."""
    rank = torch.argsort(torch.argsort(torch.rand(b, n, generator=gen), dim=-1), dim=-1)
    return rank < num_keep


def joint_visible(b: int, j: int, p: int, max_hidden: int, gen) -> torch.Tensor:
    """1..max_hidden whole joints hidden per row: [B, N] bool."""
    count = torch.randint(1, max_hidden + 1, (b, 1), generator=gen)
    hidden_bj = torch.argsort(torch.rand(b, j, generator=gen), dim=-1) < count
    return (~hidden_bj).repeat_interleave(p, dim=-1)


def make_train_step(model: TorchMAE, cfg, j: int):
    """One optimizer step of the mask mixture (half random, half whole-joint masks)."""
    opt_kw = dict(lr=cfg.lr, betas=(0.9, cfg.adam_b2), weight_decay=cfg.weight_decay)
    try:
        opt = torch.optim.AdamW(model.parameters(), fused=True, **opt_kw)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.parameters(), **opt_kw)
    p = model.num_patches
    n = j * p
    keep_r = max(1, round(n * (1.0 - cfg.mask.ratio)))
    gen = torch.Generator().manual_seed(0)

    def step(tokens_bnd):
        b = tokens_bnd.shape[0]
        n_joint = round(b * cfg.mask.joint_fraction)
        groups = ((tokens_bnd[:b - n_joint], random_visible(b - n_joint, n, keep_r, gen), keep_r,
                   n - keep_r),
                  (tokens_bnd[b - n_joint:], joint_visible(n_joint, j, p,
                                                           cfg.mask.max_hidden_joints, gen), n - p,
                   p * min(j, cfg.mask.max_hidden_joints)))
        total, count = 0.0, 0.0
        for tok, vis, keep, n_query in groups:  # the loss's rows, hidden first, like JAX's
            if len(tok):
                rows = torch.argsort(vis.to(torch.int8), dim=-1, stable=True)[:, :n_query]
                hid = ~vis.gather(1, rows)
                target = tok.gather(1, rows[..., None].expand(-1, -1, tok.shape[-1]))
                err = (model(tok, vis, keep, rows) - target).square().mean(-1)
                total, count = total + (err * hid).sum(), count + hid.sum()
        loss = total / count
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss

    return step


def _timeit(fn, min_s: float, min_reps: int = 3) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def scoring_fn(model: TorchMAE, x_btjc: torch.Tensor, patch: int, j: int, chunk: int = 0,
               rows_only: bool = True):
    """Pass 1 on B strides: all J occlusion masks in one forward, or `chunk` rows at a time;
    mask j decodes joint j's rows only, like `scoring.occlusion_recon_rows` (`rows_only`),
    or every row, joint j's kept (the full decode JAX's `scoring_full_decode` times)."""
    b = x_btjc.shape[0]
    p = model.num_patches
    tok = patchify(x_btjc, patch).repeat(j, 1, 1)  # [J*B, N, D], mask-major
    vis = (~torch.eye(j, dtype=torch.bool)).repeat_interleave(p, -1).repeat_interleave(b, 0)
    rows = (torch.arange(j)[:, None] * p + torch.arange(p)).repeat_interleave(b, 0)
    step = chunk or len(tok)

    def run():
        with torch.inference_mode():
            if rows_only:
                return torch.cat([model(tok[i:i + step], vis[i:i + step], j * p - p,
                                        rows[i:i + step])
                                  for i in range(0, len(tok), step)]).view(j, b, p, -1)
            out = torch.cat([model(tok[i:i + step], vis[i:i + step], j * p - p)
                             for i in range(0, len(tok), step)]).view(j, b, j, p, -1)
            return out[torch.arange(j), :, torch.arange(j)]  # mask j -> joint j

    return run


def _batch(x: torch.Tensor, b: int) -> torch.Tensor:
    """The first b strides of x (repeated if x has fewer)."""
    return x[:b] if b <= len(x) else x.repeat(-(-b // len(x)), 1, 1, 1)[:b]


def _score_rates(model, x, patch: int, j: int, batches, min_s: float,
                 rows_only: bool = True) -> dict:
    """Strides/s per batch size: the best of one call and chunks of the J masks of one stride
    or as many as the JAX pass 1's CPU chain holds (`scoring.pass1_chunk`)."""
    chunks = sorted({0, j, scoring.pass1_chunk("cpu", j * (x.shape[1] // patch))})
    return {f"b{b}": max(b / _timeit(scoring_fn(model, _batch(x, b), patch, j, c, rows_only),
                                     min_s)
                         for c in chunks) for b in batches}


def _angles(batch: dict) -> torch.Tensor:
    """The batch's angles as the reference reads them (NaN -> 0, tenths of degrees)."""
    return torch.from_numpy(np.nan_to_num(np.asarray(batch["angles"], np.float32)) / 10.0)


def train_step_fn(cfg, shape: dict, batch: dict):
    """A closure running one eager optimizer step of a fresh reference model on the batch."""
    step = make_train_step(create(cfg, shape), cfg, shape["num_joints"])
    tok = patchify(_angles(batch), cfg.model.patch)
    return lambda: step(tok)


def benchmark(cfg, shape: dict, batch: dict, *, quick: bool, score_batches=(1, 64),
              try_compile: bool = False) -> dict:
    """Train seq/s and pass-1 strides/s of the reference (eager; torch.compile if faster).

    torch.compile is opt-in: on the 2-core CPU it compiled for ~200 s and ran slower than
    eager (BUILD_NOTES.md, Performance).
    """
    min_s = 0.3 if quick else 2.0
    j, patch = shape["num_joints"], cfg.model.patch
    x = _angles(batch)
    t_train = _timeit(train_step_fn(cfg, shape, batch), min_s)
    model = create(cfg, shape).eval()
    scores = _score_rates(model, x, patch, j, score_batches, min_s)
    full = _score_rates(model, x, patch, j, score_batches[-1:], min_s, rows_only=False)
    out = dict(train_seq_per_s=len(x) / t_train, scoring=scores, scoring_full_decode=full,
               params=num_params(model),
               threads=torch.get_num_threads(), version=torch.__version__, compiled=False,
               note=f"torch {torch.__version__} eager, {torch.get_num_threads()} threads")
    if try_compile:
        out.update(_compiled(cfg, shape, x, score_batches, min_s, out))
    return out


def _compiled(cfg, shape, x, score_batches, min_s, eager: dict) -> dict:
    """torch.compile figures, kept only where they beat eager (compile time reported)."""
    j, patch = shape["num_joints"], cfg.model.patch
    try:
        t0 = time.perf_counter()
        model = create(cfg, shape)
        cmodel = torch.compile(model, dynamic=False)
        step = make_train_step(cmodel, cfg, j)
        tok = patchify(x, patch)
        step(tok)
        t_train = _timeit(lambda: step(tok), min_s)
        cmodel.eval()
        scores = _score_rates(cmodel, x, patch, j, score_batches, min_s)
        compile_s = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001  (no compiler, inductor errors: eager stands)
        return dict(note=eager["note"] + f"; torch.compile failed: {type(e).__name__}")
    best = dict(eager_train_seq_per_s=eager["train_seq_per_s"], eager_scoring=eager["scoring"],
                compiled_train_seq_per_s=len(x) / t_train, compiled_scoring=scores,
                compile_and_time_s=compile_s)
    best["train_seq_per_s"] = max(eager["train_seq_per_s"], len(x) / t_train)
    best["scoring"] = {k: max(eager["scoring"][k], scores[k]) for k in scores}
    best["compiled"] = best["train_seq_per_s"] > eager["train_seq_per_s"]
    best["note"] = (eager["note"] + "; torch.compile tried, best of eager/compiled kept "
                    "per figure")
    return best
