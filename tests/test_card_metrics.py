"""The metric summaries model lists show (engines.card_metrics)."""

from engines.card_metrics import human_size, key_metrics


def _eval(split, **fields):
    return {"split": split, "command": "chainrule eval ...", **fields}


def test_the_test_split_wins_over_val_and_each_kind_gets_its_unit():
    metrics = {"fsdd/val": _eval("val", bits_per_sample=4.238, bits_per_dim=4.238),
               "fsdd/test": _eval("test", bits_per_sample=4.2994, bits_per_dim=4.2994),
               "bench/audio": {"cached_over_naive": 86.43, "onnx_cached": 13430.0}}
    assert key_metrics(metrics) == "test 4.299 bits/sample · cached generation 86.4x naive"
    assert key_metrics({"tinyshakespeare/val": _eval("val", bits_per_char=2.0927, bits_per_dim=2.0927)}) == \
        "val 2.093 bits/char"
    assert key_metrics({"mnist/test": _eval("test", bits_per_dim=1.117992, nats_per_example=607.5)}) == \
        "test 1.1180 bits/dim"


def test_binary_images_are_in_nats_per_image_with_the_ensemble_size():
    made = {"test_nats_per_image": 91.3, "default_k": 32,
            "binarized_mnist/test": _eval("test", nats_per_example=91.27706, bits_per_dim=0.168, ensemble_k=32),
            "bench/density": {"made_sample_seconds_per_image": 1.72}}
    assert key_metrics(made) == "test 91.28 nats/image (K = 32)"  # no ratio in MADE's bench: none shown
    nade = {"binarized_mnist/test": _eval("test", nats_per_example=90.37589, bits_per_dim=0.1663),
            "bench/density": {"nade_speedup": 22.46, "nade_eval_images_per_second": 1396.0}}
    assert key_metrics(nade) == "test 90.38 nats/image · incremental sampling 22.5x naive"


def test_cards_without_records_fall_back_to_their_first_numbers():
    assert key_metrics({"val_loss": 1.234567, "converged": True, "note": "x", "steps": 10, "more": 3}) == \
        "val_loss: 1.235 · note: x · steps: 10"
    assert key_metrics({}) == "" and key_metrics(None) == ""


def test_human_size():
    assert [human_size(n) for n in (512, 2048, 12_800_000, 3 * 1024 ** 3)] == ["512 B", "2.0 KB", "12.2 MB", "3.0 GB"]


def test_speech_model_shows_both_levels_and_how_its_samples_are_recognised():
    from engines.card_metrics import key_metrics

    metrics = {
        "fsdd/test": {"task": "likelihood", "vocoder_bits_per_sample": 3.912, "prior_nats_per_frame": 31.97,
                      "bits_per_sample": 3.912},
        "fsdd/test/resynthesis": {"task": "resynthesis", "digit_accuracy": 0.95, "speaker_accuracy": 0.8},
        "generation/recognised": {"task": "generation", "digit_accuracy": 0.85, "speaker_accuracy": 0.7},
        "bench/audio": {"realtime_factor": 1.7},
    }
    assert key_metrics(metrics) == ("test vocoder 3.912 bits/sample, prior 31.97 nats/frame · generated digits "
                                    "recognised 85% (speaker 70%) · 1.7x real time")
