"""The columns of the exported tables: the result-directory contract in one place.

``results.csv`` has one row per run, ``epochs.csv`` one per run and epoch, ``layers.csv`` one per
run, epoch and hidden layer. Readers and writers both take the names from here.
"""

RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "activation",  # the schedule's label: "relu", or "tanh>relu@5" when switched at epoch 5
    "activation_start",  # the activation in force at epoch 1
    "switch_epoch",  # first epoch trained with switch_to; 0 when the run never switches
    "switch_to",
    "range_lo",
    "range_hi",
    "seed",
    "lr",
    "momentum",
    "batch_size",
    "epochs",
    "train_subset",  # training images used; 60000 for the full set
    "n_params",
    "final_train_loss",
    "test_loss",
    "test_accuracy",  # percent
    "status",  # pending | running | finished | diverged | failed
    "diverged_epoch",  # first epoch whose train loss was not finite; 0 if none
    "seconds",  # wall time of the run's training and evaluation
    "device",
    "group_id",  # runs trained together in one batched computation share it
)

EPOCH_COLUMNS: tuple[str, ...] = (
    "run_id",
    "epoch",  # 1-based
    "activation",  # the activation in force during this epoch
    "train_loss",  # mean of the epoch's batch losses
    "test_loss",  # mean cross-entropy over the test set after the epoch
    "test_accuracy",  # percent
    "seconds",  # wall time of the epoch's training steps (evaluation excluded)
)

LAYER_STAT_COLUMNS: tuple[str, ...] = (
    "mean",
    "std",
    "p02",
    "p25",
    "p50",
    "p75",
    "p98",
    "saturated_frac",  # saturating activations: share of outputs within 5% of a bound, else NaN
    "zero_frac",  # rectifying activations: share of pre-activations <= 0, else NaN
    "dead_frac",  # rectifying activations: share of units <= 0 for the whole batch, else NaN
    "grad_norm",  # L2 norm of the layer's weight gradient on the recorded batch
    "update_ratio",  # ||weight change|| / ||weight|| of the step on the recorded batch
)

LAYER_COLUMNS: tuple[str, ...] = ("run_id", "epoch", "layer", "activation", *LAYER_STAT_COLUMNS)

HIDDEN_LAYERS: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "conv5", "lin1", "lin2")
