"""benchmarks.virl_gain: both adapters through `main.py predict`, paired by prompt, one bootstrap."""

from benchmarks.virl_gain import gain_line, main


def test_gain_line_says_whether_the_interval_excludes_zero():
    assert gain_line([0.1, 0.2, 0.3], [0.3, 0.4, 0.5]) == "reward gain (virl - sft): +0.2000  95% CI [+0.2000, +0.2000]  (excludes 0, n=3)"
    assert "(includes 0, n=2)" in gain_line([0.1, 0.5], [0.5, 0.1])


def test_the_same_adapter_twice_gains_exactly_nothing(tiny_model, tiny_corpus, tmp_path, capsys):
    from vinci.backbone import Backbone, load_backbone, save_adapter

    net, processor = load_backbone(Backbone(model=str(tiny_model)), trainable=True)
    adapter = save_adapter(net, processor, tmp_path / "adapter")
    main(["--sft", str(adapter), "--virl", str(adapter), "--model", str(tiny_model), "--rows", str(tiny_corpus / "rl_test.jsonl"),
          "--max-new-tokens", "8", "--limit", "3", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "\nsft        all         3 " in out and "\nvirl       all         3 " in out
    assert out.rstrip().endswith("reward gain (virl - sft): +0.0000  95% CI [+0.0000, +0.0000]  (includes 0, n=3)")
