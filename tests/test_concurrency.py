"""How many trials a search keeps started: what the alive nodes fit plus a bounded number pending, recounted as
nodes come and go, bound at run time (a restored searcher takes the limit of the run that resumed it)."""
from petseg.tune.concurrency import Concurrency, LiveLimit
from petseg.tune.groups import FixedTrials, VariantSearcher, searchers_run_with

GPU_TRIAL = {"CPU": 4, "GPU": 1}
HEAD = {"CPU": 8}  # a GPU-less head, as in the cluster configs
WORKER = {"CPU": 32, "GPU": 4}


def test_a_cluster_pends_one_node_worth_beyond_what_it_fits():
    bound = Concurrency(GPU_TRIAL, pending=None, cap=0, on_cluster=True)
    assert bound.limit([HEAD]) == 1  # no node fits a trial yet: one pends, so the autoscaler adds a worker
    assert bound.limit([HEAD, WORKER]) == 4 + 4
    assert bound.limit([HEAD, WORKER, WORKER]) == 8 + 4  # a joined node counts at once


def test_the_local_ray_pends_nothing_and_the_user_settings_bound_it():
    assert Concurrency({"CPU": 1}, pending=None, cap=0, on_cluster=False).limit([{"CPU": 2}]) == 2
    assert Concurrency(GPU_TRIAL, pending=2, cap=0, on_cluster=True).limit([HEAD, WORKER]) == 6
    assert Concurrency(GPU_TRIAL, pending=None, cap=5, on_cluster=True).limit([HEAD, WORKER]) == 5
    assert Concurrency(GPU_TRIAL, pending=0, cap=0, on_cluster=True).limit([HEAD]) == 1  # never none at all


def test_the_limit_is_recounted_after_its_refresh_period():
    nodes, now = [[HEAD, WORKER]], [0.0]
    limit = LiveLimit(Concurrency(GPU_TRIAL, pending=0, cap=0, on_cluster=True), nodes=lambda: nodes[0],
                      clock=lambda: now[0])
    assert limit() == 4
    nodes[0] = [HEAD, WORKER, WORKER]
    assert limit() == 4  # read again only after REFRESH_S
    now[0] = 2.5
    assert limit() == 8


def searcher() -> VariantSearcher:
    return VariantSearcher({"a": (1e-4, 1e-2), "b": (1e-4, 1e-2)}, num_samples=4, metric="m", mode="max")


def test_searchers_start_no_more_trials_than_the_limit_and_refill_as_trials_end():
    limit = [2]
    variant_search, fixed = searcher(), FixedTrials([{"variant": "a", "lr": 0.1}] * 4, "m", "max")
    with searchers_run_with(None, lambda: limit[0]):
        for search in (variant_search, fixed):
            limit[0] = 2
            assert search.suggest("t1") and search.suggest("t2")
            assert search.suggest("t3") is None  # two started and unfinished: the limit
            search.on_trial_complete("t1", {"m": 0.5})
            assert search.suggest("t3")
            limit[0] = 3  # a node joined
            assert search.suggest("t4")
    # Outside a run no limit applies.
    assert variant_search.suggest("t5")


def test_a_restored_searcher_takes_the_limit_of_the_run_that_resumed_it(tmp_path):
    started = searcher()
    with searchers_run_with(None, lambda: 2):
        started.suggest("t1"), started.suggest("t2")
        assert started.suggest("t3") is None
    started.save(str(tmp_path / "searcher.pkl"))
    resumed = searcher()
    resumed.restore(str(tmp_path / "searcher.pkl"))
    with searchers_run_with(None, lambda: 3):  # resumed with a bigger cluster or a higher cap
        assert resumed.suggest("t3")["variant"] in ("a", "b")
        assert resumed.suggest("t4") is None  # t1, t2 (resumed by Tune) and t3 run
