"""The training side: data root, windows, caching, speaker-independent evaluation, export, parity.

Most tests run on a small synthetic corpus (generated voices written as 16 kHz mono FLAC
with manifests and fold files laid out like ../shared/data), so the whole
dataset -> evaluate -> export -> parity -> Model.load path runs everywhere. Tests marked
``corpus`` do a small real run (2 speakers per corpus, one fold) on the corpora.
"""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from realtime_ser import features
from realtime_ser.audio.windowing import windows_of
from realtime_ser.model import REQUIRED_CARD_KEYS, Model
from realtime_ser.normalize import OnlineNormalizer
from train import data as tdata
from train import dataset, evaluate, export, recipes
from train.__main__ import main as train_main
from train.report import read_report, write_report

from helpers import voice

SR = 16_000
SYN_CLASSES = {"sad": 110.0, "neutral": 170.0, "angry": 260.0}  # label -> F0 of its synthetic voice
SYN_SPEAKERS = {"ravdess": ("Actor_01", "Actor_02", "Actor_03"), "emodb": ("03", "08", "09")}
SYN_CLIPS_PER_CLASS = 2
SPEAKER_F0_SHIFT = (0.92, 1.0, 1.08)  # each speaker's voice a little lower or higher
LEAD_SILENCE_S = 0.6
VOICE_S = 1.8


def _write_corpus(root, corpus: str) -> None:
    folder = root / corpus
    rows, folds = [], []
    for s, spk in enumerate(SYN_SPEAKERS[corpus]):
        folds.append((spk, s + 1))
        for label, f0 in SYN_CLASSES.items():
            for k in range(SYN_CLIPS_PER_CLASS):
                x = voice(f0 * SPEAKER_F0_SHIFT[s] * (1 + 0.02 * k), VOICE_S, seed=100 * s + k)
                pad = np.zeros(int(LEAD_SILENCE_S * SR), dtype=np.float32)
                rel = f"{spk}/{label}-{k}.flac"
                (folder / spk).mkdir(parents=True, exist_ok=True)
                sf.write(str(folder / rel), np.concatenate([pad, x, pad]), SR, subtype="PCM_16")
                sha = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
                rows.append((rel, spk, label, f"{VOICE_S + 2 * LEAD_SILENCE_S:.3f}", sha))
    with open(folder / "MANIFEST.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(tdata.MANIFEST_COLUMNS)
        w.writerows(rows)
    (root / "protocols").mkdir(exist_ok=True)
    with open(root / "protocols" / f"{corpus}_speaker_folds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(tdata.FOLD_COLUMNS)
        w.writerows(folds)


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("syndata")
    for corpus in tdata.PROTOCOL_CORPORA:
        _write_corpus(root, corpus)
    return root


@pytest.fixture(scope="module")
def syn_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def syn_report(syn_root, syn_cache, tmp_path_factory):
    """A full evaluation of the synthetic corpora (logreg, both modes, seed), written to disk."""
    cfg = evaluate.EvalConfig(data_root=syn_root, recipes=("logreg",), modes=recipes.NORM_MODES, jobs=1,
                              cache_dir=syn_cache)
    from realtime_ser.vad import VadParams
    from train.report import complete_report

    rep = complete_report(evaluate.evaluate(cfg), cfg.framing, VadParams())
    out = write_report(rep, tmp_path_factory.mktemp("report"))
    return out


# ---------------------------------------------------------------- data


def test_data_root_resolution_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(tdata.DATA_ENV, str(tmp_path))
    assert tdata.resolve_data_root(None) == tmp_path.resolve()
    assert tdata.resolve_data_root(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(tdata.DataError, match="--data") as e:
        tdata.resolve_data_root(str(tmp_path / "nope"))
    assert "\n" not in str(e.value)
    with pytest.raises(tdata.DataError, match="MANIFEST.csv not found"):
        tdata.load_manifest(tmp_path, "emodb")


def test_manifest_folds_and_speaker_limit(syn_root):
    clips = tdata.load_manifest(syn_root, "ravdess")
    assert len(clips) == len(SYN_SPEAKERS["ravdess"]) * len(SYN_CLASSES) * SYN_CLIPS_PER_CLASS
    assert tdata.corpus_labels(clips) == ["neutral", "sad", "angry"]  # canonical order, not file order
    folds = tdata.load_folds(syn_root, "ravdess")
    assert folds == {"Actor_01": 1, "Actor_02": 2, "Actor_03": 3}
    assert tdata.limit_speakers(folds, 2) == {"Actor_01": 1, "Actor_02": 2}  # round robin over folds
    assert tdata.limit_speakers({"a": 1, "b": 1, "c": 2}, 2) == {"a": 1, "c": 2}


def test_read_clip_reads_flac_wav_and_ogg_opus(tmp_path):
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), x, SR, subtype="PCM_16")
    sf.write(str(tmp_path / "a.flac"), x, SR, subtype="PCM_16")
    sf.write(str(tmp_path / "a.opus"), x, SR, format="OGG", subtype="OPUS")
    for name in ("a.wav", "a.flac"):
        assert np.allclose(dataset.read_clip(tmp_path / name), x, atol=1e-4)
    y = dataset.read_clip(tmp_path / "a.opus")  # lossy: same length, same level
    assert abs(len(y) - len(x)) < SR // 10 and abs(np.std(y) - np.std(x)) < 0.05


def test_discover_corpora_is_data(tmp_path):
    with pytest.raises(tdata.DataError, match="no corpus"):
        tdata.discover_corpora(tmp_path)
    for name in ("zeta", "alpha"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "MANIFEST.csv").write_text(",".join(tdata.MANIFEST_COLUMNS) + "\n")
    (tmp_path / "protocols").mkdir()  # no manifest: not a corpus
    assert tdata.discover_corpora(tmp_path) == ("alpha", "zeta")
    with pytest.raises(tdata.DataError, match="found alpha, zeta"):
        tdata.check_corpora(tmp_path, ["alpha", "beta"])


def test_read_clip_refuses_other_formats(tmp_path):
    sf.write(str(tmp_path / "a.flac"), np.zeros((SR, 2), dtype=np.float32), SR)
    with pytest.raises(tdata.DataError, match="16 kHz mono FLAC, WAV"):
        dataset.read_clip(tmp_path / "a.flac")
    sf.write(str(tmp_path / "b.flac"), np.zeros(44_100, dtype=np.float32), 44_100)
    with pytest.raises(tdata.DataError, match="44100 Hz"):
        dataset.read_clip(tmp_path / "b.flac")
    sf.write(str(tmp_path / "c.aiff"), np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(tdata.DataError, match="AIFF"):
        dataset.read_clip(tmp_path / "c.aiff")
    sf.write(str(tmp_path / "d.flac"), np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(tdata.DataError, match="sha256"):
        dataset.read_clip(tmp_path / "d.flac", sha256="0" * 64)


# ---------------------------------------------------------------- windows and cache


def test_window_table_is_the_runtime_windowing(syn_root, syn_cache):
    clips = tdata.load_manifest(syn_root, "emodb")[:2]
    table = dataset.load_windows("emodb", clips, cache_dir=syn_cache)
    x = dataset.read_clip(clips[0].path)
    ws = windows_of(x, dataset.Framing().window, dataset.Framing().hop)
    rows = table.clip_index == 0
    assert rows.sum() == len(ws)
    assert table.end[rows].tolist() == [w.end for w in ws]
    assert table.final[rows].tolist() == [w.final for w in ws]
    np.testing.assert_array_equal(table.X[rows][2], features.extract(ws[2].samples))
    # the leading silence: the first window (0.5 s of zeros plus 0.1 s voice) is no speech; the middle is
    assert not table.speech[rows][0] and table.speech[rows][3]
    assert table.counts()["dropped_windows"] == int((~table.speech).sum()) > 0


def test_cache_is_reused_and_keyed(syn_root, tmp_path, monkeypatch):
    clips = tdata.load_manifest(syn_root, "emodb")[:2]
    first = dataset.load_windows("emodb", clips, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("windows-emodb-*.npz"))) == 1

    def boom(*_args):
        raise AssertionError("recomputed a cached clip")

    monkeypatch.setattr(dataset, "clip_windows", boom)
    again = dataset.load_windows("emodb", clips, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_array_equal(first.speech, again.speech)
    # other VAD parameters are another cache entry, so they are computed (and here: refused)
    with pytest.raises(AssertionError, match="recomputed"):
        dataset.load_windows("emodb", clips, cache_dir=tmp_path, vad_params=dataset.vad.VadParams(min_voiced_s=0.5))


# ---------------------------------------------------------------- normalisation simulation


def _syn_data(syn_root, syn_cache, corpus="emodb"):
    clips = tdata.load_manifest(syn_root, corpus)
    table = dataset.load_windows(corpus, clips, cache_dir=syn_cache)
    return evaluate.CorpusData.from_tables(corpus, [table], tdata.corpus_labels(clips))


def test_online_simulation_is_causal_and_per_speaker(syn_root, syn_cache):
    data = _syn_data(syn_root, syn_cache)
    train = np.flatnonzero(data.clip_speaker != "03")
    prior = evaluate.normalizer_prior(data.X[np.isin(data.clip_index, train) & data.speech],
                                      data.window_speakers()[np.isin(data.clip_index, train) & data.speech])
    rows = np.flatnonzero(data.window_speakers() == "03")
    got = evaluate.simulate_online(data, rows, prior)
    # by hand: that speaker's clips in the seeded order, windows in time order, update-then-transform on voiced
    spk_clips = np.unique(data.clip_index[rows])
    order = np.random.default_rng(evaluate.speaker_order_seed("03")).permutation(spk_clips)
    norm = OnlineNormalizer(prior)
    first_clip_rows = np.flatnonzero(data.clip_index == order[0])
    expected = {}
    for c in order:
        for r in np.flatnonzero(data.clip_index == c):
            if data.speech[r]:
                norm.update(data.X[r])
            expected[r] = norm.transform(data.X[r])
    np.testing.assert_allclose(got, np.stack([expected[r] for r in rows]), rtol=1e-6)
    assert norm.n_updates == int(data.speech[rows].sum())
    # causal: the first window of the first clip is normalised with the prior alone (it is not voiced)
    r0 = first_clip_rows[0]
    assert not data.speech[r0]
    np.testing.assert_allclose(got[list(rows).index(r0)], OnlineNormalizer(prior).transform(data.X[r0]), rtol=1e-6)


def test_per_speaker_training_normalisation(syn_root, syn_cache):
    data = _syn_data(syn_root, syn_cache)
    groups = data.window_speakers()
    Xn = evaluate.per_speaker_normalise(data.X, groups)
    for g in np.unique(groups):
        m = Xn[groups == g].mean(axis=0)
        assert np.max(np.abs(m)) < 1e-3


@pytest.mark.slow
def test_no_score_on_a_training_speaker(syn_root, syn_cache, monkeypatch):
    """Every prediction (outer and inner CV) is for speakers absent from the model's training clips."""
    data = _syn_data(syn_root, syn_cache, "ravdess")
    evaluate._DATA["ravdess"] = data
    trained_on = []
    real_fit, real_predict = evaluate.fit_model, evaluate.predict_windows

    def fit(recipe, params, mode, d, train_clips):
        model, prior = real_fit(recipe, params, mode, d, train_clips)
        trained_on.append(set(d.clip_speaker[train_clips]))
        model._speakers = trained_on[-1]
        return model, prior

    checked = []

    def predict(model, prior, d, rows):
        test_speakers = set(d.window_speakers()[rows])
        assert not test_speakers & model._speakers, "scored a speaker the model was trained on"
        checked.append(test_speakers)
        return real_predict(model, prior, d, rows)

    monkeypatch.setattr(evaluate, "fit_model", fit)
    monkeypatch.setattr(evaluate, "predict_windows", predict)
    out = evaluate.run_fold("ravdess", "logreg", "online_speaker", 1, ["Actor_01"])
    assert set(data.clip_speaker[out["clips"]]) == {"Actor_01"}
    assert len(checked) == 1 + len(recipes.get_recipe("logreg").grid) * 2  # outer + grid x 2 inner folds


# ---------------------------------------------------------------- evaluation report


@pytest.mark.slow
def test_evaluation_report_on_synthetic_corpora(syn_report):
    rep = read_report(syn_report)
    assert {p.name for p in syn_report.glob("*.png")} >= {"ravdess-logreg-none.png", "emodb-seed.png",
                                                          "emodb-logreg-online_speaker.png"}
    md = (syn_report / "report.md").read_text()
    assert "## ravdess" in md and "seed MLP" in md and "online_speaker" in md
    for corpus in tdata.PROTOCOL_CORPORA:
        p = rep["protocols"][corpus]
        assert p["complete"] and list(p["folds"]) == ["1", "2", "3"]
        n_clips = len(SYN_SPEAKERS[corpus]) * len(SYN_CLASSES) * SYN_CLIPS_PER_CLASS
        for key in ("logreg/none", "logreg/online_speaker"):
            u = p["results"][key]["utterance"]
            assert u["n"] == n_clips  # every clip scored exactly once, held out
            assert np.sum(u["confusion"]) == n_clips
            assert u["ua"] >= 0.8, (corpus, key, u["ua"])  # the synthetic classes are easy
            assert p["results"][key]["window"]["n"] == p["counts"]["voiced_windows"]
        sb = p["seed_baseline"]
        assert sb["utterance"]["n"] == n_clips
        assert len(sb["utterance_ua_by_random_state"]) == len(evaluate.SEED_RANDOM_STATES)
        assert sb["utterance_ua_by_random_state"][0] == sb["utterance"]["ua"]
    assert rep["timing"]["total_s"] > 0


# ---------------------------------------------------------------- export and parity


@pytest.mark.slow
def test_export_synthetic_end_to_end(syn_root, syn_cache, syn_report, tmp_path):
    rep = read_report(syn_report)
    card = export.export(data_root=syn_root, out_dir=tmp_path, recipe="logreg", mode="online_speaker",
                         report=rep, cache_dir=syn_cache, jobs=1)
    onnx_path = tmp_path / "default.onnx"
    model = Model.load(onnx_path)
    on_disk = json.loads((tmp_path / "default.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    for key in REQUIRED_CARD_KEYS + ("training_data", "evaluation", "seed_baseline", "license"):
        assert key in on_disk, key
    assert on_disk["labels"] == ["neutral", "sad", "angry"] == list(model.labels)
    assert on_disk["feature_spec"]["hash"] == features.SPEC_HASH
    assert on_disk["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert model.normalizer is not None and len(model.normalizer.prior_mean) == features.N_FEATURES
    assert on_disk["training_data"]["clips"] == 2 * len(SYN_SPEAKERS["emodb"]) * len(SYN_CLASSES) * SYN_CLIPS_PER_CLASS
    for corpus in tdata.PROTOCOL_CORPORA:
        e = on_disk["evaluation"][corpus]
        assert {"protocol", "ua", "accuracy", "macro_f1", "per_class_recall", "confusion"} <= set(e)
        assert e["ua"] == rep["protocols"][corpus]["results"]["logreg/online_speaker"]["utterance"]["ua"]
        assert {"ua", "accuracy", "confusion"} <= set(on_disk["seed_baseline"][corpus])
    assert "CC BY-NC-SA 4.0" in on_disk["license"]["name"] and len(on_disk["license"]["credits"]) == 2
    assert all(s["label_mismatches"] == 0 for s in on_disk["parity"]["sets"].values())
    assert "non-commercial" in (tmp_path / "MODEL_CARD.md").read_text()
    # the runtime path: online normaliser + ONNX classify a new synthetic voice of each class correctly
    norm = OnlineNormalizer(model.normalizer)
    for label, f0 in SYN_CLASSES.items():
        x = features.extract(voice(f0, 2.0, seed=7))
        norm.update(x)
        assert model.labels[int(np.argmax(model.predict_proba(norm.transform(x))))] == label


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_every_recipe_converts_with_parity_on_held_out_speakers(name, syn_root, syn_cache):
    data = _syn_data(syn_root, syn_cache, "ravdess")
    train = np.flatnonzero(data.clip_speaker != "Actor_03")
    params = recipes.get_recipe(name).grid[0]
    pipe, _ = evaluate.fit_model(name, params, "none", data, train)
    held_out = data.X[data.window_speakers() == "Actor_03"]
    result = export.check_parity(export.to_onnx(pipe), pipe, {"held_out": held_out})
    assert result["held_out"]["windows"] == len(held_out) > 0
    assert result["held_out"]["label_mismatches"] == 0


def test_parity_failure_fails_the_export(syn_root, syn_cache):
    data = _syn_data(syn_root, syn_cache, "ravdess")
    pipe, _ = evaluate.fit_model("logreg", {"C": 1.0}, "none", data, np.arange(data.n_clips))
    onnx_bytes = export.to_onnx(pipe)
    pipe.named_steps["scaler"].mean_ = pipe.named_steps["scaler"].mean_ + 1.0  # sklearn now differs from ONNX
    with pytest.raises(export.ExportError, match="parity fails"):
        export.check_parity(onnx_bytes, pipe, {"windows": data.X[data.speech]})


@pytest.mark.slow
def test_export_refuses_report_without_the_recipe(syn_report, syn_root, tmp_path):
    with pytest.raises(export.ExportError, match="no svc/none results"):
        export.export(data_root=syn_root, out_dir=tmp_path, recipe="svc", mode="none",
                      report=read_report(syn_report))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize("argv, fragment", [
    (["fly"], "invalid choice"),
    (["evaluate", "--recipe", "forest"], "unknown recipe 'forest'"),
    (["evaluate", "--norm", "global"], "unknown normalisation mode"),
    (["evaluate", "--speakers", "0"], "positive integer"),
    (["evaluate", "--data", "/nonexistent/data"], "is not a directory"),
    (["cross", "--xrecipe", "forest"], "unknown cross-corpus recipe 'forest'"),
    (["cross", "--label-set", "12"], "unknown label set"),
    (["cross", "--train-norm", "global"], "unknown training normalisation"),
])
def test_cli_bad_arguments_one_line_error(argv, fragment, capsys):
    code = train_main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert fragment in err and err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_evaluate_writes_the_within_corpus_report(syn_root, syn_cache, tmp_path, capsys):
    report_dir = tmp_path / "rep"
    code = train_main(["evaluate", "--data", str(syn_root), "--cache", str(syn_cache), "--report", str(report_dir),
                       "--recipe", "logreg", "--norm", "none", "--jobs", "2", "--no-seed", "--folds", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    rep = read_report(report_dir)
    assert set(rep["protocols"]) == {"ravdess", "emodb"} and "utterance UA" in out
    assert not any(p["complete"] for p in rep["protocols"].values())  # one fold only: the report says so


# ---------------------------------------------------------------- the real corpora


@pytest.mark.corpus
@pytest.mark.slow
def test_small_real_run_of_the_within_corpus_protocols(data_root, tmp_path, capsys):
    """2 speakers per corpus, one fold, logreg: the RAVDESS and EmoDB protocols on the real clips."""
    code = train_main(["evaluate", "--data", str(data_root), "--report", str(tmp_path / "rep"),
                       "--recipe", "logreg", "--norm", "online_speaker",
                       "--speakers", "2", "--folds", "1", "--no-seed", "--jobs", "2"])
    assert code == 0, capsys.readouterr()
    rep = read_report(tmp_path / "rep")
    assert set(rep["protocols"]) == {"ravdess", "emodb"}
    assert len(rep["protocols"]["ravdess"]["labels"]) == 8


# ---------------------------------------------------------------- cross-corpus protocol (issue 9), generated corpora

XC_CLASSES = {"sad": 110.0, "neutral": 165.0, "happy": 230.0, "angry": 300.0}  # label -> F0 of its voice
XC_CORPORA = {"alpha": ("flac", "neutral"), "beta": ("wav", "neutral"), "gamma": ("opus", "calm")}
XC_SPEAKERS = 2
XC_CLIPS = 2


def _write_xc_corpus(root, corpus: str, ext: str, neutral_name: str, shift: float) -> None:
    folder = root / corpus
    folder.mkdir(parents=True)
    rows = []
    for s in range(XC_SPEAKERS):
        spk = f"{corpus[0].upper()}{s}"
        for label, f0 in XC_CLASSES.items():
            for k in range(XC_CLIPS):
                x = voice(f0 * shift * (1 + 0.04 * s + 0.02 * k), VOICE_S, seed=10 * s + k)
                x = np.concatenate([np.zeros(int(0.3 * SR), np.float32), x])
                rel = f"{spk}_{label}_{k}.{ext}"
                kw = {"format": "OGG", "subtype": "OPUS"} if ext == "opus" else {"subtype": "PCM_16"}
                sf.write(str(folder / rel), x, SR, **kw)
                rows.append((rel, spk, neutral_name if label == "neutral" else label, f"{len(x) / SR:.3f}",
                             hashlib.sha256((folder / rel).read_bytes()).hexdigest()))
    with open(folder / "MANIFEST.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(tdata.MANIFEST_COLUMNS)
        w.writerows(rows)


@pytest.fixture(scope="module")
def xc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("xcdata")
    for i, (corpus, (ext, neutral_name)) in enumerate(XC_CORPORA.items()):
        _write_xc_corpus(root, corpus, ext, neutral_name, shift=(0.95, 1.0, 1.05)[i])
    return root


@pytest.fixture(scope="module")
def xc_run(xc_root, tmp_path_factory):
    """``python -m train cross`` then ``export`` on three generated corpora (FLAC, WAV, Ogg Opus); gamma eval-only."""
    cache = tmp_path_factory.mktemp("xccache")
    report = tmp_path_factory.mktemp("xcreport")
    models = tmp_path_factory.mktemp("xcmodels")
    common = ["--data", str(xc_root), "--cache", str(cache), "--cross-report", str(report), "--jobs", "1",
              "--eval-only", "gamma", "--augment"]
    assert train_main(["cross", *common]) == 0
    assert train_main(["export", *common, "--out", str(models)]) == 0
    return json.loads((report / "report.json").read_text()), report, models


def test_corpora_are_discovered_from_manifests(xc_root):
    assert tdata.discover_corpora(xc_root) == tuple(sorted(XC_CORPORA))


def test_cross_protocol_holds_out_each_corpus(xc_run):
    rep, report, _ = xc_run
    from train.crosscorpus import MODES

    cc = rep["cross_corpus"]
    assert set(cc["corpora"]) == set(XC_CORPORA)  # every corpus held out once, eval-only included
    for held_out, d in cc["corpora"].items():
        for mode in MODES:
            f = d[mode]
            cm = np.asarray(f["confusion"])
            assert cm.sum() == rep["counts"][held_out]["clips"]  # one prediction per held-out clip
            rec = [r for r in f["per_class_recall"].values() if r is not None]
            assert abs(np.mean(rec) - f["ua"]) < 1e-9
        # The inner selection never sees the held-out corpus, nor the evaluation-only one.
        for entry in rep["inner_selection"][held_out]:
            assert held_out not in entry["per_corpus"] and "gamma" not in entry["per_corpus"]
        assert (report / f"cross-{held_out}.png").stat().st_size > 0
    for mode in MODES:
        assert abs(cc["mean"][mode]["ua"] - np.mean([cc["corpora"][h][mode]["ua"] for h in cc["corpora"]])) < 1e-9
    assert set(rep["robustness"]["mean"]) == {"clean", "snr20", "snr10", "snr5", "reverb"}
    # calm (gamma) is counted as neutral: the four classes of the label set everywhere.
    assert cc["corpora"]["gamma"]["per_speaker"]["labels"] == ["neutral", "happy", "sad", "angry"]
    # Pitch tells these voices apart: adapting to the speaker must beat chance by far.
    assert cc["mean"]["per_speaker"]["ua"] > 0.5
    assert "per speaker" in (report / "report.md").read_text()


def test_cross_export_card(xc_run):
    rep, _, models = xc_run
    card = json.loads((models / "default.json").read_text())
    model = Model.load(models / "default.onnx")
    assert list(model.labels) == card["labels"] == ["neutral", "happy", "sad", "angry"]
    assert card["training_data"]["corpora"] == ["alpha", "beta"]  # gamma: evaluated on, never trained on
    assert "gamma" in card["training_data"]["not_trained_on"]
    cc = card["evaluation"]["cross_corpus"]
    assert set(cc["corpora"]) == set(XC_CORPORA)
    for d in cc["corpora"].values():
        assert set(d) == {"population", "per_file", "per_speaker"}
        for f in d.values():
            assert set(f) == {"ua", "accuracy", "per_class_recall", "confusion", "labels"}
    assert cc["mean"]["per_speaker"]["ua"] == rep["cross_corpus"]["mean"]["per_speaker"]["ua"]
    assert card["recipe"]["augment"] is True


def test_augmentation_is_seeded_and_reaches_its_snr():
    from train import augment

    x = voice(180.0, 2.0, seed=3)
    a = augment.apply("aug", x, seed_text="clip-a", babble=lambda: [voice(120.0, 1.5, seed=4)])
    b = augment.apply("aug", x, seed_text="clip-a", babble=lambda: [voice(120.0, 1.5, seed=4)])
    c = augment.apply("aug", x, seed_text="clip-b", babble=lambda: [voice(120.0, 1.5, seed=4)])
    assert np.array_equal(a, b) and not np.array_equal(a, c) and len(a) == len(x)
    level = 10 * np.log10(augment.active_power(a))
    assert augment.LEVEL_RANGE_DBFS[0] - 1 <= level <= augment.LEVEL_RANGE_DBFS[1] + 1
    for cond, snr in augment.TEST_SNR_DB.items():
        y = augment.apply(cond, x, seed_text="clip-a", babble=lambda: [voice(120.0, 1.5, seed=4)])
        measured = 10 * np.log10(augment.active_power(x) / np.mean((y - x).astype(np.float64) ** 2))
        assert abs(measured - snr) < 0.5, (cond, measured)
    r = augment.apply("reverb", x, seed_text="clip-a")
    assert not np.allclose(r, x) and abs(10 * np.log10(augment.active_power(r) / augment.active_power(x))) < 0.5
    with pytest.raises(ValueError, match="unknown audio condition"):
        augment.check_condition("underwater")


def test_augmented_windows_are_cached_per_condition(xc_root, tmp_path):
    clips = tdata.load_manifest(xc_root, "alpha")[:3]
    t1 = dataset.load_windows("alpha", clips, cache_dir=tmp_path, condition="aug")
    t2 = dataset.load_windows("alpha", clips, cache_dir=tmp_path, condition="aug")
    t0 = dataset.load_windows("alpha", clips, cache_dir=tmp_path)
    assert np.array_equal(t1.X, t2.X) and not np.array_equal(t1.X[: len(t0.X)], t0.X[: len(t1.X)])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and any("-aug-" in n for n in names)
