"""SSLTrainer: logging, evaluation, checkpoints and exact resume, on real images (the embedded subset)."""

import pytest
import torch
from conftest import tiny_dino

from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.trainer import SSLTrainer
from hf_ssl.views import MultiCropConfig, MultiCropTransform, apply_views

TWO_VIEW_METHODS = {  # tiny heads; MoCo v2's queue (32 keys) wraps around within the run
    "simclr": dict(projection_hidden_dim=32, projection_dim=16),
    "byol": dict(projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32, momentum_teacher=0.9),
    "simsiam": dict(projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=8),
    "moco_v2": dict(projection_hidden_dim=32, projection_dim=16, queue_size=32, momentum_teacher=0.9),
    "moco_v3": dict(projection_hidden_dim=32, projection_dim=16, prediction_hidden_dim=32, momentum_teacher=0.9),
}


def view_dataset(embedded_images, count=64, num_local_crops=2):
    views = MultiCropConfig(global_crop_size=16, local_crop_size=8, num_local_crops=num_local_crops)
    return apply_views(embedded_images["train"].select(range(count)), MultiCropTransform(views))


def make_trainer(output_dir, dataset, max_steps=6, eval_dataset=None, model_factory=tiny_dino, **overrides):
    torch.manual_seed(0)
    settings = dict(
        output_dir=str(output_dir), per_device_train_batch_size=8, max_steps=max_steps, learning_rate=1e-3,
        logging_steps=1, save_steps=3, use_cpu=True, report_to="none", seed=7, disable_tqdm=True,
    )
    settings.update(overrides)
    return SSLTrainer(
        model=model_factory(), args=SSLTrainingArguments(**settings), train_dataset=dataset, eval_dataset=eval_dataset
    )


def test_logs_diagnostics_schedules_and_world_size(tmp_path, embedded_images, capsys):
    dataset = view_dataset(embedded_images)
    trainer = make_trainer(tmp_path, dataset, max_steps=2, eval_dataset=dataset, eval_strategy="steps", eval_steps=2)
    trainer.train()
    assert "world size: 1, per-device batch: 8, global batch: 8" in capsys.readouterr().out
    logs = trainer.state.log_history
    train_logs = [log for log in logs if "loss" in log]
    for key in ("teacher_entropy", "teacher_student_kl", "teacher_temperature", "teacher_momentum", "learning_rate"):
        assert key in train_logs[0], train_logs[0]
    assert any("eval_loss" in log for log in logs)  # label-free model still reports an eval loss


def test_evaluators_are_logged_with_eval_prefix(tmp_path, embedded_images):
    calls = []

    def fake_probe(model):
        calls.append(type(model).__name__)
        return {"knn_top1": 0.5}

    trainer = make_trainer(tmp_path, view_dataset(embedded_images), max_steps=1)
    trainer.evaluators = [fake_probe]
    metrics = trainer.evaluate()
    assert metrics == {"eval_knn_top1": 0.5} and calls == ["DINOForPreTraining"]


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, embedded_images):
    dataset = view_dataset(embedded_images, count=48)  # 6 steps of 8 = one epoch; save at step 3 (mid-epoch)
    full = make_trainer(tmp_path / "full", dataset, max_steps=9)
    full.train()
    interrupted = make_trainer(tmp_path / "part", dataset, max_steps=9)
    interrupted.train()  # only to produce checkpoint-3 with the same arguments
    resumed = make_trainer(tmp_path / "part", dataset, max_steps=9)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-3"))
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key)
    assert resumed.state.global_step == 9
    # the centre and the teacher moved during training and were restored, not re-initialised
    assert resumed.model.loss_fn.center.abs().sum() > 0


@pytest.mark.parametrize("method", sorted(TWO_VIEW_METHODS))
def test_every_two_view_method_resumes_exactly_including_queues_and_teachers(tmp_path, embedded_images, method):
    from conftest import tiny_vit_config

    from hf_ssl.methods import METHOD_REGISTRY

    def factory():
        return METHOD_REGISTRY[method].from_encoder_config(tiny_vit_config(), **TWO_VIEW_METHODS[method])

    dataset = view_dataset(embedded_images, count=48, num_local_crops=0)
    common = dict(max_steps=6, model_factory=factory, save_steps=2)
    full = make_trainer(tmp_path / "full", dataset, **common)
    full.train()
    make_trainer(tmp_path / "part", dataset, **common).train()  # produces checkpoint-2
    resumed = make_trainer(tmp_path / "part", dataset, **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=f"{method}: {key}")
    if method == "moco_v2":  # 6 steps x 2 views x 8 keys into 32 slots: the queue wrapped
        assert int(resumed.model.loss_fn.queue_ptr) == (6 * 2 * 8) % 32
        assert not torch.equal(resumed.model.loss_fn.queue, factory().loss_fn.queue)


def test_trainer_refuses_a_dataset_without_views(tmp_path, embedded_images):
    trainer = make_trainer(tmp_path, embedded_images["train"].select(range(16)), max_steps=1)
    with pytest.raises(ValueError, match="apply_views"):
        trainer.train()


def test_evaluator_callback_adds_probe_metrics_to_a_plain_trainer(tmp_path, embedded_images):
    from transformers import Trainer

    from hf_ssl.data.collators import stack_views
    from hf_ssl.training.callbacks import EvaluatorCallback, SSLMethodCallback

    dataset = view_dataset(embedded_images, count=16)
    args = SSLTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=8, use_cpu=True,
                                report_to="none", disable_tqdm=True)
    trainer = Trainer(model=tiny_dino(), args=args, eval_dataset=dataset, data_collator=stack_views,
                      callbacks=[SSLMethodCallback(), EvaluatorCallback(lambda model: {"knn_top1": 0.25})])
    metrics = trainer.evaluate()
    assert metrics["eval_knn_top1"] == 0.25 and "eval_loss" in metrics
    assert trainer.state.log_history[-1]["eval_knn_top1"] == 0.25


def test_a_hub_token_is_never_pickled_into_training_args_bin(tmp_path):
    import pickle

    args = SSLTrainingArguments(output_dir=str(tmp_path), hub_token="hf_secretvalue", use_cpu=True, report_to="none")
    assert args.hub_token == "hf_secretvalue"  # still usable in this process
    assert b"hf_secretvalue" not in pickle.dumps(args)
    assert pickle.loads(pickle.dumps(args)).hub_token is None


@pytest.mark.parametrize("method", ["byol", "simsiam", "moco_v3"])
def test_predictor_learning_rate_scale_gives_the_predictor_its_own_scheduled_groups(tmp_path, embedded_images, method):
    from conftest import tiny_vit_config

    from hf_ssl.methods import METHOD_REGISTRY

    settings = {**TWO_VIEW_METHODS[method], "predictor_learning_rate_scale": 10.0}

    def factory():
        return METHOD_REGISTRY[method].from_encoder_config(tiny_vit_config(), **settings)

    trainer = make_trainer(tmp_path, view_dataset(embedded_images, count=16, num_local_crops=0),
                           max_steps=2, model_factory=factory, warmup_steps=1, weight_decay=0.1)
    trainer.create_optimizer_and_scheduler(num_training_steps=4)
    groups = trainer.optimizer.param_groups
    predictor = {id(p) for p in trainer.model.predictor.parameters()}
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    grouped = [p for group in groups for p in group["params"]]
    assert sorted(map(id, grouped)) == sorted(map(id, trainable))  # every parameter once, none lost
    for group in groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= predictor or not ids & predictor  # a group is all predictor or no predictor
    scaled = [g for g in groups if {id(p) for p in g["params"]} <= predictor]
    assert {g["weight_decay"] for g in scaled} == {0.1, 0.0}  # decay / no-decay split kept
    for _ in range(2):  # warm-up then cosine: the 10x ratio holds at every step
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        base = max(g["lr"] for g in groups if g not in scaled)
        assert base > 0
        for group in scaled:
            assert group["lr"] == pytest.approx(10 * base)
    # the default (scale 1) leaves Trainer's two groups alone
    plain = make_trainer(tmp_path / "plain", view_dataset(embedded_images, count=16, num_local_crops=0), max_steps=2,
                         model_factory=lambda: METHOD_REGISTRY[method].from_encoder_config(
                             tiny_vit_config(), **TWO_VIEW_METHODS[method]))
    plain.create_optimizer()
    assert len(plain.optimizer.param_groups) == 2


@pytest.mark.parametrize("method", ["byol", "simsiam"])
def test_a_fixed_predictor_learning_rate_skips_warm_up_and_decay(tmp_path, embedded_images, method):
    from conftest import tiny_vit_config

    from hf_ssl.methods import METHOD_REGISTRY

    settings = {**TWO_VIEW_METHODS[method], "predictor_learning_rate_scale": 10.0, "predictor_fixed_learning_rate": True}
    trainer = make_trainer(tmp_path, view_dataset(embedded_images, count=16, num_local_crops=0), max_steps=2,
                           model_factory=lambda: METHOD_REGISTRY[method].from_encoder_config(tiny_vit_config(),
                                                                                            **settings),
                           warmup_steps=2, learning_rate=1e-3)
    trainer.create_optimizer_and_scheduler(num_training_steps=6)
    groups = trainer.optimizer.param_groups
    predictor = {id(p) for p in trainer.model.predictor.parameters()}
    fixed = [g for g in groups if g["fixed_lr"]]
    assert {id(p) for g in fixed for p in g["params"]} == predictor
    encoder_lrs = []
    for _ in range(6):  # warm-up from 0, then cosine to 0 for the rest; the predictor stays at 10x the peak
        assert all(g["lr"] == pytest.approx(1e-2) for g in fixed)
        encoder_lrs.append(max(g["lr"] for g in groups if not g["fixed_lr"]))
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert encoder_lrs[0] == 0.0 and encoder_lrs[2] == pytest.approx(1e-3) and encoder_lrs[-1] < 1e-3
    assert trainer.lr_scheduler.get_last_lr()[groups.index(fixed[0])] == pytest.approx(1e-2)


@pytest.mark.parametrize("method", ["byol", "simsiam", "moco_v3"])
def test_a_non_positive_predictor_learning_rate_scale_is_refused(method):
    from hf_ssl.methods import METHOD_REGISTRY

    config_class = METHOD_REGISTRY[method].method_config_class
    with pytest.raises(ValueError, match="predictor_learning_rate_scale must be > 0"):
        config_class(predictor_learning_rate_scale=0.0)


def test_labels_flow_to_a_model_that_takes_them_and_compute_metrics_sees_them(tmp_path, embedded_images):
    """Views keep the labels when asked (label_column), stack_views batches them, SSLTrainer hands them to a model
    whose forward names `labels` (a transformers classifier here) and to no other (DINO trains on the same batches),
    and compute_metrics receives predictions with their label ids."""
    from transformers import ViTForImageClassification

    from hf_ssl.data import stack_views
    from hf_ssl.views import SingleViewConfig, SingleViewTransform

    images = embedded_images["train"].select(range(32))
    labelled = apply_views(images, SingleViewTransform(SingleViewConfig(global_crop_size=16), label_column="label"))
    batch = stack_views([labelled[i] for i in range(4)])
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == images["label"][:4]
    assert batch["pixel_values"].shape == (4, 3, 16, 16)

    from conftest import tiny_vit_config

    config = tiny_vit_config(image_size=16)
    config.num_labels = 10
    seen = {}

    def compute_metrics(prediction):
        seen["label_ids"] = prediction.label_ids
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    args = SSLTrainingArguments(
        output_dir=str(tmp_path / "classifier"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
        max_steps=2, use_cpu=True, report_to="none", disable_tqdm=True, prediction_loss_only=False,
    )
    trainer = SSLTrainer(model=ViTForImageClassification(config), args=args, train_dataset=labelled,
                         eval_dataset=labelled, compute_metrics=compute_metrics)
    assert trainer.label_names == ["labels"]
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and "eval_loss" in metrics
    assert sorted(seen["label_ids"].tolist()) == sorted(images["label"][:32])

    multicrop = MultiCropConfig(global_crop_size=16, local_crop_size=8, num_local_crops=2)
    dino_data = apply_views(images, MultiCropTransform(multicrop, label_column="label"))
    assert "labels" in stack_views([dino_data[0], dino_data[1]])
    dino = make_trainer(tmp_path / "dino", dino_data, max_steps=1)
    dino.train()  # DINO's forward takes no labels: they are not passed to it
    assert dino.state.global_step == 1
