"""`--strategy trade`: trust-region Bayesian optimisation with one trust region per architecture family.

What is taken from where:

* TRADE (Kim, Myeong and Yun 2022, "Revisiting Architecture-aware Knowledge
  Distillation: Smaller Models and Faster Search"): pick the student among
  several state-of-the-art families (the `zoo` space) with trust-region
  Bayesian optimisation, searching each family's width/depth knobs rather
  than a cell space.
* TuRBO (Eriksson et al. 2019, "Scalable Global Optimization via Local
  Bayesian Optimization"): the mechanics below, with its constants: a GP per
  trust region, Thompson sampling on Sobol candidates in a box shaped by the
  GP's length scales, the length's expand/shrink/restart rules, and TuRBO-m's
  choice of the region to propose from by Thompson sampling across regions.

`TrustRegionStrategy` has the ask/tell interface of
`strategies.HyperoptStrategy`, so the schedule (screening, successive halving,
the store, resume) is the same for every strategy.

**Domain.** One region per group of `Space.search_groups()` (the zoo: one
per family; nago, which has no families: one over all its knobs), over the
group's searchable knobs followed by the distillation knobs
(`config.kd_knobs`). Each knob maps to [0, 1] from its declaration
(`to_unit` / `from_unit`):

* `FloatKnob`: linear over [low, high]; over [log low, log high] when `log`.
* `IntKnob` and `ChoiceKnob`: the n allowed values (low, low+step, ..., high,
  or the choices in declared order) own n equal bins of [0, 1]; u decodes to
  its bin's value and a value encodes to its bin's centre. A proposal is
  snapped to bin centres (`KnobMap.snap`) before it is stored, so the GP and
  the region's centre see the point that was evaluated.

**One region** (TuRBO-1). A GP on the region's points since its last
(re)start: scikit-learn `GaussianProcessRegressor`, Matérn ν=2.5 with one
length scale per dimension plus a `WhiteKernel`, `normalize_y=True`, TuRBO's
bounds (length scales 0.005..2, noise 5e-4..0.2). The box is centred on the
region's incumbent (its best feasible loss; while none is feasible, its
smallest penalty) with side L·w_i, w_i = l_i / geometric mean(l), clipped to
[0, 1]. Candidates: 256 scrambled-Sobol points in the box; Thompson sampling
draws one joint posterior sample over them (`posterior_draw`) and takes its
argmin (the best novel one: "Novel networks" below).
The length L starts at 0.8, doubles (at most 1.6) after 3 consecutive
successes (the incumbent improved by more than 1e-3·|incumbent|), halves
after max(4, d) consecutive failures, and below 0.5^7 the region restarts as
TuRBO does: its points leave its GP, L is 0.8 again, the counters are zero
and it is seeded with a fresh Sobol design.

**Across regions.** First an initial design, round robin over the regions:
each region's warm starts (`config.warm_start_points`, the same points the
hyperopt bridge asks first: the family's declared defaults and
`TrainConfig`'s KD settings, or the caller's, such as `compress`'s two plain
CNNs that fill the budget; a region without one starts with one more Sobol
point), then `n_sobol` scrambled-Sobol points per
region (6 // regions, at least 1 and at most d // 2: one per zoo family,
6 for nago; it does not depend on `--trials`, which a resume may raise).
Then each live region (below) draws its Thompson sample and the region with
the lowest sampled value proposes. The draw undoes the per-region
normalisation of y, so the sampled values compare across regions in loss
units.

**Retired regions.** A region whose knobs are all size and depth knobs
(`Space.size_knobs`, `Space.depth_knobs`: every zoo family's) and whose first
design fit-to-budget skipped whole (each point predicted over the budget,
beyond the latency model's error, at the family's smallest size and depth:
`fit`'s docstring) draws no Thompson sample, unless every region is retired.
Its family cannot fit the budget: the fit had taken it to the smallest size
and depth, and it has no other knob that changes the network (the KD knobs
do not). nago's graph knobs do, so its region is never retired. TuRBO has no
such rule, since every point of its domain can be evaluated. On
digits-cluttered at 2x the runtime floor the five zoo families besides plain
are all skipped this way, and each of them cost a GP fit and a posterior
draw per proposal for the whole search.

**Novel networks** (`novel`, the schedule's `Schedule.novel`). TuRBO's domain
is continuous, so a Thompson argmin is a point it has not evaluated. Here
fit-to-budget maps many points to one network, and a network is trained
once per run (a proposal fitted to a trained one is a repeat:
`schedule`'s docstring): in the three low-label five-minute searches of
BENCHMARKS.md ("Repeats"), 56 to 254 of trade's proposals were repeats,
250 of the 266 Thompson proposals of one, as its plain region's box
snapped to networks it had trained. So the region that proposes walks its
candidates from the lowest sampled loss and takes the first whose params
name, once fitted, a network the run has not trained and the fit does not
skip, asking about at most `NOVELTY_CHECKS` distinct archs (the KD knobs do
not change the network). This is how Bayesian optimisation over a finite
domain treats evaluated points: they are not proposed again. When none of
them is novel, the region's neighbourhood is exhausted: it proposes its best
candidate marked `EXHAUSTED`, and `tell` restarts the region after it,
as TuRBO restarts a region that has converged (shrinking its box, TuRBO's
answer to failures, would only leave fewer networks in it). With both rules
the same three searches proposed 0-2 repeats, trained 36-39 networks where
they had trained 23-33, and spent 7-10 s of their 5 minutes proposing
instead of 34-116 s (BENCHMARKS.md, "TRADE proposes networks it has not
trained").

**Outcomes**, as the hyperopt bridge reads them: loss = -score (`TrialRecord.score`);
an over-budget family enters the GP with its `penalty_loss` and is a failure
for the counters; a failed one (an exception, a NaN) is a failure that
enters the GP at the region's worst loss, and no better than a family just
over budget (the GP needs a value, and "as bad as the worst seen" is the
usual imputation); a retryable failure is ignored. Only Thompson proposals
move the counters (TuRBO's initial design does not). A repeat (a proposal
fitted to a network the run had trained: `schedule`'s docstring) enters the
GP at its point with that network's loss at the smallest fidelity, feasible;
it is not an improvement, so a Thompson repeat is a failure for the counters,
and a region that keeps proposing its incumbent shrinks to its restart.

**State and resume.** `ask` reads the regions and changes nothing; `tell`
replays outcomes in the order given and is the only thing that moves a
region. `misc` = {"region", "x" (the snapped point in [0, 1]^d), "how"
("design" or "thompson"), `strategies.WARM_START` on a warm start,
`EXHAUSTED` on a region's last proposal before its restart}: the state is a
function of the told history, so a resumed run, told the stored records,
proposes the same next point, as long as `novel` answers as it did (it reads
the run's trained networks, which are stored, and the latency model, which
may have learnt from the evaluation that was in flight). Every random draw
is seeded from (run seed, proposal number, region, restart).

**Departures.** One proposal at a time (TuRBO proposes batches for parallel
workers). Categorical knobs (nago's graph models and ops) are ordinal bins
on one axis, not a categorical kernel. No perturbation mask (TuRBO perturbs
only min(20/d, 1) of the axes of each candidate; d is at most 24 here). No
output-scale kernel: `normalize_y` gives y unit variance. The initial design
is one or a few points per region instead of TuRBO's 2d, since these
searches train 12 to 40 families in all.

Retired regions and novel networks depart from TuRBO too (above).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from compressor.search.config import SearchConfig, WarmStart, kd_knobs, warm_start_points
from compressor.search.store import TrialRecord
from compressor.search.strategies import WARM_START, penalty_loss
from compressor.spaces.base import FloatKnob, IntKnob, Knob, Space

INITIAL_LENGTH = 0.8
MIN_LENGTH = 0.5**7
MAX_LENGTH = 1.6
SUCCESS_TOLERANCE = 3
IMPROVEMENT = 1e-3
INIT_SOBOL_BUDGET = 6
CANDIDATES_LOG2 = 8  # 256 Thompson candidates per region (a power of two keeps Sobol's balance)
NOVELTY_CHECKS = 64  # distinct archs of the best candidates asked `novel` before the region counts as exhausted
EXHAUSTED = "exhausted"  # the `misc` key of a proposal whose region found no novel candidate: it restarts when told

# (proposal number, params) -> whether the params name, once fitted, a network worth evaluating.
Novelty = Callable[[int, dict[str, Any]], bool]


def _levels(knob: Knob) -> int:
    """How many values a discrete knob allows."""
    if isinstance(knob, IntKnob):
        return (knob.high - knob.low) // knob.step + 1
    return len(knob.choices)


def from_unit(knob: Knob, u: float) -> Any:
    """The knob value at u in [0, 1] (see the module docstring)."""
    u = min(max(float(u), 0.0), 1.0)
    if isinstance(knob, FloatKnob):
        if knob.log:
            value = math.exp(math.log(knob.low) + u * (math.log(knob.high) - math.log(knob.low)))
        else:
            value = knob.low + u * (knob.high - knob.low)
        return min(max(value, knob.low), knob.high)
    index = min(int(u * _levels(knob)), _levels(knob) - 1)
    if isinstance(knob, IntKnob):
        return knob.low + knob.step * index
    return knob.choices[index]


def to_unit(knob: Knob, value: Any) -> float:
    """The point of [0, 1] that `value` encodes to: inverse of `from_unit` (a discrete value -> its bin's centre)."""
    if isinstance(knob, FloatKnob):
        if knob.log:
            return (math.log(value) - math.log(knob.low)) / (math.log(knob.high) - math.log(knob.low))
        return (value - knob.low) / (knob.high - knob.low)
    index = round((value - knob.low) / knob.step) if isinstance(knob, IntKnob) else knob.choices.index(value)
    return (index + 0.5) / _levels(knob)


@dataclass(frozen=True)
class KnobMap:
    """[0, 1]^d <-> knob values for an ordered tuple of knobs."""

    knobs: tuple[Knob, ...]

    def decode(self, x: Sequence[float]) -> dict[str, Any]:
        return {k.name: from_unit(k, u) for k, u in zip(self.knobs, x)}

    def encode(self, values: dict[str, Any]) -> np.ndarray:
        return np.array([to_unit(k, values[k.name]) for k in self.knobs])

    def snap(self, x: Sequence[float]) -> np.ndarray:
        """x clipped to [0, 1], each discrete axis moved to its bin's centre (float axes keep their bits)."""
        return np.array([
            min(max(float(u), 0.0), 1.0) if isinstance(k, FloatKnob) else to_unit(k, from_unit(k, u))
            for k, u in zip(self.knobs, x)
        ])


@dataclass
class Region:
    """One trust region: a group's knobs, its length and counters, and its points since the last (re)start."""

    name: str
    index: int
    arch_knobs: tuple[Knob, ...]
    knob_map: KnobMap
    warm: tuple[dict[str, Any], ...] = ()  # the warm starts' knob values (arch and KD), evaluated first
    n_sobol: int = 1  # Sobol points of the region's (re)start design, beside its warm starts
    sized: bool = False  # every arch knob is a size or depth knob: a family skipped at its smallest is retired
    length: float = INITIAL_LENGTH
    successes: int = 0
    failures: int = 0
    restarts: int = 0
    told: int = 0  # evaluations since the last (re)start, failed ones included: the design's progress
    skipped: int = 0  # of those, the ones fit-to-budget skipped: predicted far over at the smallest size and depth
    X: list[np.ndarray] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    feasible: list[bool] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return len(self.knob_map.knobs)

    @property
    def failure_tolerance(self) -> int:
        return max(4, self.dim)

    @property
    def design_size(self) -> int:
        """Points of the (re)start design: `n_sobol` plus the warm starts (one Sobol point after a restart)."""
        return self.n_sobol + max(1, len(self.warm) if self.restarts == 0 else 0)

    @property
    def retired(self) -> bool:
        """Whether the family cannot fit the budget: every point of its first design skipped (module docstring)."""
        return self.sized and self.restarts == 0 and self.told >= self.design_size and self.skipped == self.told

    def incumbent(self) -> int | None:
        """Index of the best feasible point, or of the smallest penalty while none is feasible."""
        if not self.y:
            return None
        feasible = [i for i, ok in enumerate(self.feasible) if ok]
        return min(feasible or range(len(self.y)), key=lambda i: self.y[i])

    def observe(self, x: np.ndarray, rec: TrialRecord, counts: bool) -> None:
        """Add one outcome; a Thompson proposal's outcome (`counts`) moves the length (TuRBO's rules)."""
        best = self.incumbent()
        incumbent = self.y[best] if best is not None and self.feasible[best] else None
        if rec.status == "failed":
            loss, feasible = max([penalty_loss(0.0), *self.y]), False
        else:
            loss, feasible = float(rec.loss), rec.status in ("ok", "repeat")
        improved = feasible and (incumbent is None or loss < incumbent - IMPROVEMENT * abs(incumbent))
        self.X.append(x)
        self.y.append(loss)
        self.feasible.append(feasible)
        self.told += 1
        self.skipped += rec.status == "infeasible" and bool(((rec.misc or {}).get("fit") or {}).get("skipped"))
        if not counts:
            return
        self.successes, self.failures = (self.successes + 1, 0) if improved else (0, self.failures + 1)
        if self.successes == SUCCESS_TOLERANCE:
            self.length, self.successes = min(2.0 * self.length, MAX_LENGTH), 0
        elif self.failures == self.failure_tolerance:
            self.length, self.failures = self.length / 2.0, 0
        if self.length < MIN_LENGTH:
            self.restart()

    def restart(self) -> None:
        """TuRBO's restart: forget the points, length back to its start, a fresh design next."""
        self.restarts += 1
        self.length, self.successes, self.failures, self.told, self.skipped = INITIAL_LENGTH, 0, 0, 0, 0
        self.X, self.y, self.feasible = [], [], []


class TrustRegionStrategy:
    """TRADE/TuRBO over the groups of `space` plus the distillation knobs (see the module docstring).

    scikit-learn and scipy are imported when a proposal is asked, not with
    this module.
    """

    def __init__(self, config: SearchConfig, space: Space, novel: Novelty | None = None,
                 warm_starts: Sequence[WarmStart] | None = None) -> None:
        """`warm_starts`: each in its group's region, in order (default: `warm_start_points(space)`). `novel`: whether
        a Thompson candidate names a network worth evaluating (the schedule's `Schedule.novel`; None: every one does)."""
        self.config = config
        self.space = space
        self.novel = novel
        kd = kd_knobs()
        groups = space.search_groups()
        warm: dict[str, list[dict[str, Any]]] = {}
        for w in warm_start_points(space) if warm_starts is None else warm_starts:
            if w.group not in groups:
                raise ValueError(f"warm start for {w.group!r}, not a group of space {space.name!r}")
            warm.setdefault(w.group, []).append({**w.arch, **w.kd})
        n_sobol = max(1, INIT_SOBOL_BUDGET // len(groups))
        self.regions = [
            Region(name, i, tuple(knobs), KnobMap((*knobs, *kd)), tuple(warm.get(name, ())),
                   n_sobol=max(1, min(n_sobol, (len(knobs) + len(kd)) // 2)),
                   sized=all(getattr(k, "size", False) or getattr(k, "depth", False) for k in knobs))
            for i, (name, knobs) in enumerate(groups.items())
        ]
        self._by_name = {r.name: r for r in self.regions}
        self.n_sobol = {r.name: r.n_sobol for r in self.regions}

    def params(self, region: Region, x: Sequence[float]) -> dict[str, Any]:
        """The proposal's params (the shape `FamilyEvaluator` reads) at the point x of `region`.

        The region's warm start gives its values exactly (decoding its encoding
        could move a float by one ulp: lr 0.10000000000000002).
        """
        values = region.knob_map.decode(x)
        for warm in region.warm:
            if np.array_equal(x, region.knob_map.snap(region.knob_map.encode(warm))):
                values = dict(warm)
                break
        arch = {k.name: values.pop(k.name) for k in region.arch_knobs}
        return {"arch": self.space.group_params(region.name, arch), **values}

    def ask(self, proposal: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The params of proposal number `proposal` and its `misc` (kept in the store, replayed by `tell`)."""
        pending = [r for r in self.regions if r.told < r.design_size]
        if pending:
            region = min(pending, key=lambda r: (r.told, r.index))
            x, how = self._design(region)[region.told], "design"
            warm = region.restarts == 0 and region.told < len(region.warm)  # the design opens with them
        else:
            region, x, exhausted = self._thompson(proposal)
            how, warm = "thompson", False
        x = region.knob_map.snap(x)
        marks = {WARM_START: True} if warm else {EXHAUSTED: True} if how == "thompson" and exhausted else {}
        return self.params(region, x), {"region": region.name, "x": [float(v) for v in x], "how": how, **marks}

    def tell(self, records: list[TrialRecord]) -> None:
        """Replay outcomes in order (see the module docstring); records of other strategies are refused."""
        for rec in records:
            if rec.misc is None or rec.retryable:
                continue
            region = self._by_name.get(rec.misc.get("region"))
            if region is None or len(rec.misc.get("x", ())) != region.dim:
                raise ValueError(f"proposal {rec.proposal} was not made by --strategy trade over this space")
            region.observe(np.array(rec.misc["x"], dtype=float), rec, counts=rec.misc.get("how") == "thompson")
            if rec.misc.get(EXHAUSTED):
                region.restart()

    def tell_promoted(self, records: list[TrialRecord]) -> None:
        """Nothing: a region's GP and its success counts are on the smallest fidelity's loss, the one every point has."""

    def _seed(self, *path: int) -> int:
        return int(np.random.SeedSequence([self.config.seed, *path]).generate_state(1)[0])

    def _design(self, region: Region) -> list[np.ndarray]:
        """The region's (re)start design: its warm starts first (only before any restart), then Sobol points."""
        from scipy.stats import qmc

        warm = [region.knob_map.encode(w) for w in region.warm] if region.restarts == 0 else []
        count = region.design_size - len(warm)
        sobol = qmc.Sobol(region.dim, scramble=True, seed=self._seed(0, region.index, region.restarts))
        return [*warm, *sobol.random_base2(max(0, math.ceil(math.log2(count))))[:count]]

    def _thompson(self, proposal: int) -> tuple[Region, np.ndarray, bool]:
        """The region whose Thompson sample is lowest, its best novel candidate, and whether it had none (module
        docstring: a retired region draws nothing, unless every region is retired)."""
        live = [region for region in self.regions if not region.retired] or self.regions
        drawn = [(region, *self._region_sample(region, proposal)) for region in live]
        region, candidates, sample = min(drawn, key=lambda item: (float(item[2].min()), item[0].index))
        order = np.argsort(sample, kind="stable")
        if self.novel is None:
            return region, candidates[order[0]], False
        checked: dict[str, bool] = {}
        for i in order:
            params = self.params(region, region.knob_map.snap(candidates[i]))
            arch = json.dumps(params["arch"], sort_keys=True, default=str)
            if arch not in checked:
                if len(checked) == NOVELTY_CHECKS:
                    break
                checked[arch] = self.novel(proposal, params)
            if checked[arch]:
                return region, candidates[i], False
        return region, candidates[order[0]], True

    def _region_sample(self, region: Region, proposal: int) -> tuple[np.ndarray, np.ndarray]:
        """Thompson sampling in one region: its candidates and one joint posterior draw of their losses."""
        from scipy.stats import qmc

        gp = fit_gp(np.array(region.X), np.array(region.y), self._seed(1, proposal, region.index))
        centre = region.X[region.incumbent()]
        scales = gp.kernel_.k1.length_scale
        weights = scales / np.exp(np.mean(np.log(scales)))
        low = np.clip(centre - region.length * weights / 2.0, 0.0, 1.0)
        high = np.clip(centre + region.length * weights / 2.0, 0.0, 1.0)
        sobol = qmc.Sobol(region.dim, scramble=True, seed=self._seed(2, proposal, region.index))
        candidates = low + (high - low) * sobol.random_base2(CANDIDATES_LOG2)
        return candidates, posterior_draw(gp, candidates, self._seed(3, proposal, region.index))

    def __deepcopy__(self, memo: dict) -> "TrustRegionStrategy":
        """A copy whose regions are its own (the parallel schedule tells a copy its lies); the configuration, the
        space and `novel` (the schedule's, which holds the store) are shared."""
        clone = copy.copy(self)
        clone.regions = copy.deepcopy(self.regions, memo)
        clone._by_name = {region.name: region for region in clone.regions}
        return clone


def posterior_draw(gp, candidates: np.ndarray, seed: int) -> np.ndarray:
    """One joint draw of `gp`'s posterior at `candidates`, in loss units (`normalize_y` undone).

    scikit-learn's `sample_y` draws through numpy's `multivariate_normal`, an
    SVD of the covariance: 45 ms for 256 candidates, most of a proposal's time
    with seven regions. A Cholesky factor is a quarter of that; the jitter on
    the diagonal, relative to the posterior variance, grows only when the
    covariance of close candidates is numerically singular, and an
    eigendecomposition (negative eigenvalues clipped) is the last resort.
    """
    mean, cov = gp.predict(candidates, return_cov=True)
    z = np.random.default_rng(seed).standard_normal(len(candidates))
    scale = max(float(np.mean(np.diag(cov))), 1e-12)
    for jitter in (1e-10, 1e-8, 1e-6, 1e-4):
        try:
            return mean + np.linalg.cholesky(cov + jitter * scale * np.eye(len(cov))) @ z
        except np.linalg.LinAlgError:
            continue
    values, vectors = np.linalg.eigh(cov)
    return mean + vectors @ (np.sqrt(np.clip(values, 0.0, None)) * z)


def fit_gp(X: np.ndarray, y: np.ndarray, seed: int):
    """A GP on one region's points: Matérn-5/2 with ARD length scales + white noise, TuRBO's bounds."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import Matern, WhiteKernel

    kernel = Matern(length_scale=np.full(X.shape[1], 0.5), length_scale_bounds=(0.005, 2.0), nu=2.5) + WhiteKernel(
        noise_level=5e-3, noise_level_bounds=(5e-4, 0.2)
    )
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=seed)
    with warnings.catch_warnings():
        # A handful of points often puts a length scale on its bound: expected, not worth a warning per proposal.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(X, y)
    return gp
