"""Magnitude pruning with tensorflow-model-optimization, fine-tuned by distillation from the float model.

No identity labels are needed: the student (the model being pruned) learns to give the same embedding as
the teacher (the unpruned float model) for the same augmented chip, with a cosine loss. Sparsity ramps up
with PolynomialDecay, `UpdatePruningStep` advances the masks, `strip_pruning` leaves a plain Keras model
whose zeroed weights compress well and keep their zeros through int8 conversion.

A fine-tune writes a checkpoint every `checkpoint_every` steps; run it again with the same folder and it
continues where it was killed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError


@dataclass(frozen=True)
class PruneOptions:
    target_sparsity: float = 0.5  # fraction of weights set to zero in each pruned layer
    epochs: int = 12  # passes over the training chips (why 12: ConvertOptions.epochs)
    batch_size: int = 32
    learning_rate: float = 5e-5  # the model is already trained: small steps
    ramp_fraction: float = 0.6  # sparsity reaches its target after this fraction of the steps
    frequency: int = 10  # steps between mask updates
    checkpoint_every: int = 25  # steps
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ConvertError(f"--sparsity must be in [0, 1), got {self.target_sparsity}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConvertError("--epochs and --batch-size must be at least 1")


@dataclass(frozen=True)
class LayerSparsity:
    layer: str
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def prunable(layer) -> bool:
    """Conv and Dense kernels that training may change. The fixed shortcut expands (identity into the first
    channels) are not: pruning them would break the residual path."""
    from tf_keras import layers

    return isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.trainable


def sparsity_report(model) -> list[LayerSparsity]:
    rows = []
    for layer in model.layers:
        if prunable(layer):
            kernel = layer.get_weights()[0]
            rows.append(LayerSparsity(layer.name, int(kernel.size), int(np.count_nonzero(kernel == 0))))
    return rows


def overall_sparsity(rows: list[LayerSparsity]) -> float:
    total = sum(r.weights for r in rows)
    return sum(r.zeros for r in rows) / total if total else 0.0


def augmenter(seed: int):
    """Flip, small shifts and rotations, brightness and contrast: what a door camera varies."""
    from tf_keras import Sequential, layers

    return Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomTranslation(0.03, 0.03, fill_mode="reflect", seed=seed + 1),
        layers.RandomRotation(0.015, fill_mode="reflect", seed=seed + 2),  # ~5 degrees
        layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 3),
        layers.RandomContrast(0.15, seed=seed + 4),
    ], name="augment")


def prune_by_distillation(teacher, chips: np.ndarray, options: PruneOptions, workdir: str | Path,
                          progress: bool = True):
    """Return (pruned plain Keras model, per-layer sparsity). `workdir` holds the resumable checkpoint."""
    import tensorflow_model_optimization as tfmot

    options.validate()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if len(chips) < options.batch_size:
        raise ConvertError(f"pruning needs at least {options.batch_size} chips, got {len(chips)}")

    steps_per_epoch = len(chips) // options.batch_size
    total_steps = steps_per_epoch * options.epochs
    end_step = max(1, int(total_steps * options.ramp_fraction))
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=options.target_sparsity, begin_step=0, end_step=end_step,
        frequency=max(1, min(options.frequency, end_step)),
    )

    # The student starts as an independent copy of the teacher, which stays frozen.
    import tf_keras

    base = tf_keras.models.clone_model(teacher)
    base.set_weights(teacher.get_weights())
    student = tf_keras.models.clone_model(
        base,
        clone_function=lambda layer: (
            tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule) if prunable(layer) else layer
        ),
    )
    update_step = tfmot.sparsity.keras.UpdatePruningStep()
    update_step.set_model(student)
    update_step.on_train_begin()
    losses = distill(student, teacher, chips, options, workdir / "checkpoints", "pruning fine-tune", progress,
                     before_step=lambda: update_step.on_train_batch_begin(batch=-1),
                     after_epoch=lambda: update_step.on_epoch_end(batch=-1))

    pruned = tfmot.sparsity.keras.strip_pruning(student)
    rows = sparsity_report(pruned)
    (workdir / "sparsity.json").write_text(json.dumps({
        "options": asdict(options), "overall": overall_sparsity(rows),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "layers": [{"layer": r.layer, "weights": r.weights, "zeros": r.zeros, "sparsity": r.sparsity} for r in rows],
    }, indent=2))
    return pruned, rows


def distill(student, teacher, chips: np.ndarray, options: PruneOptions, checkpoints: Path, desc: str,
            progress: bool = True, before_step=None, after_epoch=None) -> list[float]:
    """Train `student` to give the frozen `teacher`'s embedding directions on augmented chips (cosine loss).
    Checkpoints every `options.checkpoint_every` steps into `checkpoints` and resumes from the latest one;
    the data order of each epoch is fixed by the seed, so a resumed run sees what the killed one would have."""
    import tensorflow as tf
    import tf_keras

    steps_per_epoch = len(chips) // options.batch_size
    total_steps = steps_per_epoch * options.epochs
    teacher.trainable = False
    optimizer = tf_keras.optimizers.Adam(options.learning_rate)
    augment = augmenter(options.seed)
    step = tf.Variable(0, dtype=tf.int64, name="global_step")
    checkpoint = tf.train.Checkpoint(student=student, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoints), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        print(f"{desc}: resuming at step {int(step)} of {total_steps} from {manager.latest_checkpoint}",
              file=sys.stderr)

    @tf.function
    def train_step(batch):
        x = augment(tf.cast(batch, tf.float32), training=True)
        target = tf.math.l2_normalize(teacher(x, training=False), axis=-1)
        with tf.GradientTape() as tape:
            out = tf.math.l2_normalize(student(x, training=True), axis=-1)
            loss = tf.reduce_mean(1.0 - tf.reduce_sum(out * target, axis=-1))
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    from convert.progress import bar as progress_bar

    bar = progress_bar(total=total_steps, initial=int(step), desc=desc, unit="step", enabled=progress)
    losses: list[float] = []
    while int(step) < total_steps:
        epoch, offset = divmod(int(step), steps_per_epoch)
        order = np.random.default_rng(options.seed + epoch).permutation(len(chips))
        for b in range(offset, steps_per_epoch):
            if before_step:
                before_step()
            batch = chips[order[b * options.batch_size:(b + 1) * options.batch_size]]
            losses.append(float(train_step(tf.constant(batch))))
            step.assign_add(1)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if int(step) % options.checkpoint_every == 0:
                manager.save(checkpoint_number=int(step))
        if after_epoch:
            after_epoch()
    bar.close()
    manager.save(checkpoint_number=int(step))
    return losses


def quantization_aware_finetune(pruned, teacher, chips: np.ndarray, options: PruneOptions, workdir: str | Path,
                                progress: bool = True):
    """Quantization-aware training that keeps the zeros (`Default8BitPrunePreserveQuantizeScheme`), for models
    whose post-training int8 conversion loses too much. Returns the QAT model; convert it like any other."""
    import tensorflow_model_optimization as tfmot

    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    qat = tfmot.quantization.keras.quantize_apply(tfmot.quantization.keras.quantize_annotate_model(pruned), scheme)
    distill(qat, teacher, chips, options, Path(workdir) / "checkpoints", "quantization-aware fine-tune", progress)
    return qat
