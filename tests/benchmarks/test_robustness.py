"""benchmarks/robustness.py, a fast seeded subset: every generated bad input ends in a clear error or a
plausible result, never a crash (the full 2,000 + 2,000 run is in docs/robustness.md)."""
from clsr_testing import load_benchmark


def test_seeded_fuzz_subset_has_no_crash():
    out = load_benchmark("robustness").main(["--audio", "180", "--questions", "150", "--seed", "1"])
    audio, questions = out["audio"], out["questions"]
    assert audio["crash"] == 0, audio["crashes"]
    assert questions["crash"] == 0, questions["crashes"]
    assert audio["tried"] == audio["ok"] + audio["clear_error"] == 180
    # every generator kind ran, and the obviously broken ones were refused, not "decoded"
    assert set(audio["by_kind"]) == {"random_bytes", "cut", "lying_sizes", "few_samples", "non_finite", "rate",
                                     "channels", "subtype", "damaged_compressed"}
    assert audio["by_kind"]["non_finite"]["ok"] == 0 and audio["by_kind"]["few_samples"]["ok"] == 0
    assert 0 < audio["by_kind"]["rate"]["clear_error"] < 20  # rates below 4 kHz refused, the rest loaded
    assert questions["clear_error"] > 0 and questions["ok"] > 0


def test_seeded_subset_through_the_cli_the_server_and_killed_indexers(tmp_path):
    """The same generators through `funasr-clsr index`, the retriever, the HTTP API, and SIGKILLed indexers."""
    out = load_benchmark("robustness").main(["--through", "cli,query,server,kills", "--audio", "45", "--questions", "40", "--seed", "2",
                        "--kills", "1", "--no-cli-queries", "--work", str(tmp_path)])
    cli, query, server, kills = out["cli_index"], out["query"], out["server"], out["kills"]
    assert cli["crash"] == 0, cli["crashes"]
    assert cli["index_holds_exactly_the_indexed"] and cli["clear_error"] > 0 and cli["indexed"] > 0
    assert query["crash"] == 0, query["crashes"]
    assert query["ok"] + query["clear_error"] == 40 and query["clear_error"] > 0
    assert server["crashes"] == [] and server["questions"]["crash"] == server["uploads"]["crash"] == 0
    assert server["uploads"]["clear_error"] > 0 and server["uploads"]["ok"] > 0
    spoken = server["spoken_questions"]
    assert spoken["crash"] == 0 and spoken["ok"] > 0 and spoken["clear_error"] > 0
    assert spoken["ok"] + spoken["clear_error"] == spoken["tried"] == 45
    assert server["recordings_listed_exactly_the_finished_uploads"] and server["serving_after"]
    assert kills["index_opened"] == 1 and kills["partial_or_wrong_recordings"] == 0
    assert kills["reruns_equal_to_uninterrupted"] == 1
