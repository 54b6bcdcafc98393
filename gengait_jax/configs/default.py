r"""GenGait configs, one preset per use (config as code).

Run:  python -m launch.train --config=gengait_jax/configs/default.py:demo --workdir=runs/demo
Override any value on the command line, e.g. `--config.total_steps=200`.
Presets: `tiny` (tests, seconds), `demo` (README main job on 2 CPU cores), `paper` (accelerators);
`demo_skeleton` / `paper_skeleton`: the same on 3D joint centres (`data.modality="positions"`).
"""

import ml_collections


def _base() -> ml_collections.ConfigDict:
    """Values shared by every preset; each preset overrides what it must."""
    c = ml_collections.ConfigDict()
    c.name = "base"  # preset name, part of the model id
    c.seed = 0
    c.data = ml_collections.ConfigDict(dict(
        name="gait_cycles/embedded",  # TFDS name; `gait_cycles/c3d_dir` for a lab's own files
        data_dir="data_dir",          # where TFDS prepares the dataset
        manual_dir="",                # c3d_dir: the lab's folder of C3D files
        workers=0,                    # c3d_dir: processes reading it (0: one per CPU core)
        modality="angles",            # the TFDS feature the model reads
        # Every normative subject but the test ones trains; the K fold models hold out their
        # own subjects (their held-out loss is the validation loss), so no split is kept
        # aside for validation ("" = none).
        train_split="train+validation", val_split="", test_split="test"))
    c.model = ml_collections.ConfigDict(dict(
        patch=4,          # frames per token: T/patch time tokens per joint
        width=128, depth=4, heads=4, mlp_ratio=4,
        dec_width=96, dec_depth=2, dec_heads=4,
        dtype="float32",  # compute dtype; params stay float32
        attention="auto",  # "auto": cuDNN flash attention on GPU in bf16/fp16, else "einsum"
        factorized=False,  # half the heads attend across joints, half across time (ViViT)
        layout="stride",  # "own_phase": every joint in its own gait cycle (the other side's
                          # joints rolled by half a cycle), one layout for left and right strides
        mean_curve_residual=True,  # tokens = deviation from the train split's mean curve
        linear_prior=False,  # a hidden joint starts from a ridge prediction from the body
        prior_lambda=0.03))  # its penalty (x number of training strides)
    c.mask = ml_collections.ConfigDict(dict(
        ratio=0.75,             # random-token masks hide this fraction of the tokens
        joint_fraction=0.5,     # share of each batch trained with whole-joint masks
        max_hidden_joints=3,    # whole-joint masks hide 1..this many joints
        time_block_prob=0.25,   # random masks also hide one time block this often
        max_block=6))           # longest time block, in patches
    # grain's reads of training batches (gengait_jax/input_pipeline.py). Its defaults, 16
    # threads and 500 batches ahead, read no faster on 2 cores (0.7x at batch 32: the threads
    # contend for the GIL) and hold 500 batches (2.8 GiB at `paper`'s 512): BUILD_NOTES
    # "Performance".
    c.input = ml_collections.ConfigDict(dict(read_threads=2, prefetch_batches=16))
    c.augment = ml_collections.ConfigDict(dict(  # gengait_jax/augment.py; off: all 0
        mixup_prob=0.0,   # share of strides blended with another stride of the same side
        mirror_prob=0.0,  # share of strides with left and right joints swapped (angles only)
        max_shift=0,      # strides rolled by up to this many frames (event timing error)
        offset_sd=0.0))   # random constant per (stride, joint, channel), in training SDs
    c.calibration = ml_collections.ConfigDict(dict(  # gengait_jax/calibration.py
        folds=5,       # K subject-disjoint fold models give the out-of-fold residuals
        alpha=0.05,    # family-wise false-flag rate of a healthy trial
        window=20,     # points (% of the cycle) of the phase-local shape statistic
        channels="reliable",  # flags rest on the reliable channels (tfds_gait.joints) | "all"
        offsets=False,   # constant offsets also flag (else they are reported, not flagged)
        paired_offsets=True,  # ... except a paired joint's offset combined with its left -
                              # right offset difference, on the side that deviates (asymmetry)
        asymmetry=True,  # a paired joint's shape z combined with its left - right deviation's
        joint_alpha=0.01,  # once a trial is flagged (family-wise alpha), every joint above
                           # its own (1 - joint_alpha) healthy quantile is flagged; 0: off
        chain_alpha=0.10,  # ... and a kinematic-chain neighbour of a family-wise flagged
                           # joint above its (1 - chain_alpha) quantile (joints.py); 0: off
        misfit=0.5,  # every joint z less misfit x the trial's misfit_quantile percentile of
        misfit_quantile=30.0,  # its joint z (a person the prior fits poorly everywhere); 0: off
        confirm=True))  # a joint flagged only by its own threshold must stay above it with
                        # the family-wise flagged joints withheld (gengait.py)
    c.twin = ml_collections.ConfigDict(dict(  # gengait_jax/twin.py
        withhold="joint",  # "joint": every token of a flagged joint (the paper's pass 2);
                           # "phase": only its abnormal phases
        num_samples=8,     # random context maskings for the band
        phase_margin=1.0,  # "phase": withhold where the anomaly map > flag threshold - this
        dilate=1,          # patches added on each side of an abnormal phase
        contralateral=True,  # a withheld joint with its other side observed: blend the
                             # reconstruction with that side (calibration.twin_fusion)
        band_groups=3,  # calibration also measures the error with this many occlusion
                        # groups withheld at once: the band widens with more (0: off)
        shrink_window=20,  # a withheld joint keeps its observed curve where it lies within
                           # shrink_scale x its healthy error of the estimate (mean square
                           # over this many cycle points; twin.shrink_toward_observed; 0: off)
        shrink_scale=1.25))
    c.batch_size = 64       # global batch (all hosts together)
    c.eval_batch_size = 64  # validation batches (padded); a multiple of the data axis
    c.eval_occlusion = True  # also report pass-1 loss: each joint hidden in turn
    c.total_steps = 2000
    c.lr = 1e-3
    c.end_lr_ratio = 0.01   # cosine decays to lr * this
    c.warmup_steps = 100
    c.weight_decay = 0.05
    c.adam_b2 = 0.99
    c.grad_clip = 1.0
    c.log_every = 50
    c.eval_every = 250
    c.checkpoint_every = 250
    c.keep_checkpoints = 3
    c.mesh_model = 1  # size of the 'model' mesh axis; the rest of the devices form 'data'
    return c


def tiny() -> ml_collections.ConfigDict:
    """Seconds-long runs for tests."""
    c = _base()
    c.calibration.folds = 3
    c.model.update(width=32, depth=1, heads=2, mlp_ratio=2, dec_width=32, dec_depth=1,
                   dec_heads=2)
    c.batch_size = 16
    c.total_steps = 30
    c.warmup_steps = 5
    c.log_every = 10
    c.eval_every = 15
    c.checkpoint_every = 10
    return c


def _augmented(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Mixup, mirror and shift augmentation (BUILD_NOTES "Training": what it buys)."""
    c.augment.update(mixup_prob=0.5, mirror_prob=0.5, max_shift=3)
    return c


def demo() -> ml_collections.ConfigDict:
    """The README's main job: trains on the embedded cohort in ~4 minutes on 2 CPU cores.

    Chosen by measurement (BUILD_NOTES "Training", "Pass 1"): a 64-wide 2+1-layer model on
    5-frame tokens, augmented; the default 128-wide 4+2-layer model ran 1.6 s/step here. Every
    joint in its own gait cycle, the linear body prior and random joint offsets: the three
    choices that made out-of-fold reconstruction of unseen people beat the population mean.
    Two heads of 32: the train step 1.28x faster than four of 16, same validation detection.
    Factorized attention (one head across joints, one across time): a faster step, the same
    validation detection and held-out occlusion loss (BUILD_NOTES "Factorized attention").
    """
    c = _augmented(_base())
    c.model.update(patch=5, width=64, depth=2, heads=2, mlp_ratio=2, dec_width=64,
                   dec_depth=1, dec_heads=2, layout="own_phase", linear_prior=True,
                   factorized=True)
    c.augment.offset_sd = 0.5
    c.batch_size = 32
    c.eval_batch_size = 32
    c.total_steps = 1000
    c.log_every = 200
    c.eval_every = 400
    c.checkpoint_every = 400
    return c


def demo_skeleton() -> ml_collections.ConfigDict:
    """`demo` on the skeleton (`positions`: 11 joint centres in the body frame, % leg length;
    tfds_gait.skeleton) instead of the joint angles; mirroring stays off (its left/right swap
    is for per-side angles). Full attention: the factorized one was measured on angles only."""
    c = demo()
    c.data.modality = "positions"
    c.augment.mirror_prob = 0.0
    c.model.factorized = False
    return c


def paper() -> ml_collections.ConfigDict:
    """A larger model for accelerators on the 150-subject synthetic cohort (or a c3d_dir)."""
    c = _augmented(_base())
    c.data.name = "gait_cycles/synthetic"
    c.model.update(width=384, depth=8, heads=6, dec_width=256, dec_depth=4, dec_heads=8,
                   dtype="bfloat16")
    c.batch_size = 512
    c.total_steps = 20000
    c.lr = 5e-4
    c.warmup_steps = 1000
    c.eval_every = 1000
    c.checkpoint_every = 1000
    return c


def paper_skeleton() -> ml_collections.ConfigDict:
    """`paper` on skeletons: the positions of the real cohorts (the synthetic cohort is angles
    only): the embedded cohort, or a lab's folder with `data.name=gait_cycles/c3d_dir`."""
    c = paper()
    c.data.name = "gait_cycles/embedded"
    c.data.modality = "positions"
    c.augment.mirror_prob = 0.0
    return c


def get_config(preset: str = "demo") -> ml_collections.ConfigDict:
    """Returns the named preset (`--config=default.py:tiny`)."""
    presets = {"tiny": tiny, "demo": demo, "demo_skeleton": demo_skeleton, "paper": paper,
               "paper_skeleton": paper_skeleton}
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(presets)}")
    c = presets[preset]()
    c.name = preset
    return c
