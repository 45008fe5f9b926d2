"""Choose a speech model's default frame temperature (and sample temperature) by what the recogniser hears.

    python benchmarks/tune_speech_defaults.py FRAME_TEMPERATURE TEMPERATURE [--model fsdd-speech]

One clip per digit and speaker (60) with seeds 1000.. (not the 0..2 that `chainrule eval --task generation`
uses, so the choice is not made on the clips it is then judged by), judged by the installed audio
recogniser; prints the share heard as the digit and as the speaker asked for.
"""
import argparse

from engines.audio.speech import load_speech_model, run_to_end, speak
from engines.recognise import default_judge
from engines.registry import get_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("frame_temperature", type=float)
    p.add_argument("temperature", type=float)
    p.add_argument("--model", default="fsdd-speech")
    args = p.parse_args()
    model = load_speech_model(get_model(args.model))
    judge = default_judge("audio")
    ok = spk = n = 0
    for d in range(model.prior.n_digits):
        for s in model.speakers:
            r = run_to_end(model, speak(model, seed=1000 + n, digit=d, speaker=s,
                                        frame_temperature=args.frame_temperature, temperature=args.temperature))
            v = judge.judge(r.samples, model.sample_rate)
            ok, spk, n = ok + (v.label == d), spk + (v.speaker == s), n + 1
    print(f"frame temperature {args.frame_temperature} temperature {args.temperature}: "
          f"digit {ok / n:.3f} speaker {spk / n:.3f} over {n} clips", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
