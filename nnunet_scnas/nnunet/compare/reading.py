"""A comparison in a few terminal lines: what each network cost, and what its numbers allow one to say."""
from nnunet_scnas.nnunet.compare.comparison import AVERAGE, MIN_PAIRS, Comparison


def cost_lines(comparison: Comparison) -> list[str]:
    """One line per method: seconds per epoch (measured), estimated training memory, FLOPs and parameters."""
    width = max(len(method.method.name) for method in comparison.methods)
    lines = []
    for method in comparison.methods:
        cost, seconds = method.cost, method.seconds_per_epoch
        parts = [f"{seconds:.1f} s/epoch" if seconds else "s/epoch n/a"]
        if cost.training_memory:
            parts.append(f"training memory {cost.training_memory / 2 ** 30:.2f} GiB ({cost.memory_mode})")
        if cost.flops and cost.parameters:
            parts.append(f"{cost.flops / 1e9:.1f} GFLOPs, {cost.parameters / 1e6:.2f} M parameters")
        lines.append(f"{method.method.name:<{width}}  {', '.join(parts)}")
    return lines


def reading(comparison: Comparison) -> str:
    """One sentence the numbers support: the average Dice in order; labels a method never found; and whether the
    validation cases are enough to rank the methods at all."""
    averages = sorted(((comparison.dice[m.method.name, AVERAGE].mean, m.method.name) for m in comparison.methods
                       if comparison.dice[m.method.name, AVERAGE].mean is not None), reverse=True)
    order = ", ".join(f"{name} {100 * value:.1f}" for value, name in averages)  # Dice is stored as a fraction
    missed = [f"{method.method.name} found no {name}" for method in comparison.methods
              for key, name in comparison.labels.items()
              if key != AVERAGE and comparison.dice[method.method.name, key].mean == 0]
    pairs = max((comparison.paired[c.method, c.reference, AVERAGE].n_pairs for c in comparison.contrasts), default=0)
    if pairs < MIN_PAIRS:
        learns = "" if missed else " that every network learns every label"
        cases = f"{pairs} validation case{'' if pairs == 1 else 's'}"
        verdict = f"with {cases} no difference can be tested: a demonstration{learns}, not a ranking"
    else:
        verdict = "the verdicts above say which differences the paired tests support"
    return f"average Dice (%) {order}; " + ("; ".join(missed) + "; " if missed else "") + verdict + "."
