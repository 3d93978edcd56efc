"""Stimuli: seeded arithmetic problems, CoT/direct pairings, user JSONL sets, rendered images."""

from cotscope.probes.stimuli.arithmetic import Problem, generate_problems
from cotscope.probes.stimuli.jsonl import load_problems_jsonl
from cotscope.probes.stimuli.pairs import PAIRINGS, PromptPair, make_pairs

__all__ = ["Problem", "generate_problems", "PromptPair", "make_pairs", "PAIRINGS", "load_problems_jsonl"]
