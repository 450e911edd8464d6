"""benchmarks/sft_step runs every variant on a small batch and prints one line each."""

from benchmarks import sft_step


def test_sft_step_batch_and_variants(capsys):
  batch = sft_step.host_batch(rows=8, seq=96, trained=0.25)
  assert batch["input_ids"].shape == (8, 96)
  assert 0.15 < batch["loss_mask"].mean() <= 0.25
  sft_step.main(["--rows=8", "--seq=96", "--trained=0.25", "--repeats=1"])
  lines = capsys.readouterr().out.splitlines()
  rows = [l for l in lines if l.startswith("attention=")]
  assert [l.split()[0:2] for l in rows] == [
      ["attention=naive", "head_fraction=0.0"], ["attention=naive", "head_fraction=0.5"],
      ["attention=blocked", "head_fraction=0.0"], ["attention=blocked", "head_fraction=0.5"]]
  assert rows[0].split()[4] == "1.00x"
