"""`interp steer`: a continuation with and without an intervention on one latent, side by side."""

from __future__ import annotations

import itertools
import textwrap

HELP = "generate with a latent steered, clamped or ablated, beside the unsteered continuation"
DESCRIPTION = ("Load a dictionary (a run folder, or any source interp.io.load_dictionary reads), change one latent at "
               "every position after BOS of the prompt and of the generated text (add COEFF times its decoder "
               "direction, clamp it to V, or ablate it), keeping the dictionary's error term, and print the unsteered "
               "and steered continuations side by side with the next tokens whose probability moves most.")
WIDTH = 48


def add_arguments(p) -> None:
    p.add_argument("source", metavar="RUN_OR_SOURCE", help="run folder, or a local/hub dictionary source")
    p.add_argument("--latent", type=int, required=True, help="the latent to change")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--coeff", type=float, default=None, help="add COEFF x the latent's decoder direction (steer)")
    what.add_argument("--clamp", type=float, default=None, metavar="V", help="clamp the latent to V")
    what.add_argument("--ablate", action="store_true", help="set the latent to zero")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--hook", default="", help="the hook the dictionary reads, if its files do not say")
    p.add_argument("--model", default=None, help="model spec (default: the one the dictionary records)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (the same for both continuations)")
    p.add_argument("--top", type=int, default=5, help="next tokens listed whose probability rises / falls most")
    p.add_argument("--device", default="cpu")


def run(args) -> int:
    import saes  # noqa: F401 - registers the architectures
    from interp.interventions import AFTER_BOS, Intervention, continuation, generate
    from interp.interventions.effects import next_token_changes
    from interp.interventions.splice import as_tokens
    from interp.io import load_dictionary
    from interp.model import load_model

    if args.coeff is None and args.clamp is None and not args.ablate:
        raise ValueError("Say what to do with the latent: --coeff C (steer), --clamp V or --ablate.")
    d = load_dictionary(args.source, device=args.device)
    if not d.cfg.hook_in and args.hook:
        d = load_dictionary(args.source, device=args.device, hook_in=args.hook)
    if args.hook and args.hook not in (d.cfg.hook_in, d.cfg.hook_out):
        raise ValueError(f"--hook {args.hook} but the dictionary reads {d.cfg.hook_in} and writes {d.cfg.hook_out}.")
    model = load_model(args.model or d.cfg.model or "embedded", args.device)
    if args.ablate:
        iv, label = Intervention.ablate(d, args.latent, where=AFTER_BOS), "ablated"
    elif args.clamp is not None:
        iv, label = Intervention.clamp(d, args.latent, args.clamp, where=AFTER_BOS), f"clamped to {args.clamp:g}"
    else:
        iv, label = Intervention.add(d, args.latent, args.coeff, where=AFTER_BOS), f"{args.coeff:+g} x decoder"
    changes = next_token_changes(model, args.prompt, iv, k=args.top)
    n_prompt = as_tokens(model, args.prompt).shape[1]
    texts = [continuation(model, generate(model, args.prompt, ivs, args.max_new_tokens, args.temperature, args.seed),
                          n_prompt) for ivs in ((), iv)]
    print(f"prompt: {visible(args.prompt)}")
    print(side_by_side(["unsteered", f"latent {args.latent} {label}"], [visible(t) for t in texts]))
    print("\nnext token       p before -> after   change in log p")
    for row in changes["up"] + changes["down"]:
        print(f"{visible(repr(row['token'])):<16} {row['before']:8.4f} -> {row['after']:.4f}   {row['change']:+.3f}")
    return 0


def side_by_side(titles: list[str], texts: list[str], width: int = WIDTH) -> str:
    """Two columns of wrapped text under their titles."""
    columns = [[title, "-" * width, *(textwrap.wrap(text, width) or [""])] for title, text in zip(titles, texts)]
    return "\n".join(f"{a:<{width}} | {b}" for a, b in itertools.zip_longest(*columns, fillvalue=""))


def visible(text: str) -> str:
    """Control characters (newlines, escapes) shown as escapes, so model output cannot drive the terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
