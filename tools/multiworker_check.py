r"""Two-process MultiWorkerMirroredStrategy check on 127.0.0.1.

  python -m tools.multiworker_check [--steps=6] [--workdir=DIR]

Starts two worker processes with TF_CONFIG pointing at two free local ports; each runs
`trainer.train_lib.Trainer` (the same loop as trainer/train.py) on the stand-in net of
`trainer/testing_utils.py` with synchronized batch norm, the global batch split over the
two workers, and saves its final weights. Prints one JSON line and exits non-zero
unless both workers end with bit-identical weights (and took the same number of steps).
The chief checkpoints into `workdir/model`, the other worker into
`workdir/model/workers/worker_1` (distribution.worker_model_dir).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_ports(n: int):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def worker(workdir: str, steps: int) -> None:
  """Body of one worker process (TF_CONFIG is already set)."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from trainer import distribution  # lazy: TF only in workers
  from trainer import optimizer as optimizer_lib  # lazy: TF only in workers
  from trainer import testing_utils  # lazy: TF only in workers
  from trainer import train_lib  # lazy: TF only in workers
  strategy = distribution.get_strategy("multi_worker")
  task = json.loads(os.environ["TF_CONFIG"])["task"]
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = testing_utils.make_model("sync")
    optimizer = optimizer_lib.build_optimizer(total_steps=steps, base_learning_rate=0.01,
                                              warmup_steps=1)
  model_dir = distribution.worker_model_dir(os.path.join(workdir, "model"), strategy)
  trainer = train_lib.Trainer(model, testing_utils.tiny_loss, optimizer, strategy,
                              model_dir, steps_per_loop=2, checkpoint_every=2,
                              is_chief=distribution.is_chief(strategy), progress=False)
  losses = trainer.train(testing_utils.make_dataset(global_batch=4), steps)
  np.savez(os.path.join(workdir, f"weights_{task['index']}.npz"),
           *[v.numpy() for v in model.weights])
  with open(os.path.join(workdir, f"result_{task['index']}.json"), "w") as f:
    json.dump({"step": int(trainer.step.numpy()), "loss": losses["total"],
               "replicas": strategy.num_replicas_in_sync}, f)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--timeout", type=int, default=300)
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    worker(args.workdir, args.steps)
    return 0
  import numpy as np  # pylint: disable=g-import-not-at-top
  workdir = args.workdir or tempfile.mkdtemp(prefix="multiworker_")
  os.makedirs(workdir, exist_ok=True)
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for index in range(2):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               TF_CONFIG=json.dumps({"cluster": cluster,
                                     "task": {"type": "worker", "index": index}}))
    log = open(os.path.join(workdir, f"worker_{index}.log"), "w")
    procs.append((subprocess.Popen(
        [sys.executable, "-m", "tools.multiworker_check", "--worker", f"--workdir={workdir}",
         f"--steps={args.steps}"], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT), log))
  codes = []
  for proc, log in procs:
    try:
      codes.append(proc.wait(timeout=args.timeout))
    except subprocess.TimeoutExpired:
      proc.kill()
      codes.append("timeout")
    log.close()
  report = {"check": "multi_worker_mirrored", "workers": 2, "exit_codes": codes,
            "workdir": workdir}
  if codes != [0, 0]:
    report["ok"] = False
    print(json.dumps(report))
    return 1
  results = [json.load(open(os.path.join(workdir, f"result_{i}.json"))) for i in range(2)]
  weights = [np.load(os.path.join(workdir, f"weights_{i}.npz")) for i in range(2)]
  identical = all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0].files)
  start = np.load(os.path.join(workdir, "weights_0.npz"))
  report.update({"steps": [r["step"] for r in results],
                 "replicas": results[0]["replicas"],
                 "final_loss": [r["loss"] for r in results],
                 "num_weights": len(start.files), "identical_weights": identical})
  report["ok"] = bool(identical and results[0]["step"] == results[1]["step"] == args.steps
                      and results[0]["replicas"] == 2)
  print(json.dumps(report))
  return 0 if report["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
