"""One LeNet-5 training epoch in PyTorch CPU, the same work as `cargo xtask bench --lenet`: advrob's
LeNet (conv 5x5 6 padding 2 -> ReLU -> max-pool 2 -> conv 5x5 16 -> ReLU -> max-pool 2 -> FC 120 ->
ReLU -> FC 84 -> ReLU -> FC 10), Adam 1e-3, batch 128, cross-entropy, shuffled, on the first N
training images (all by default), after a warm-up on 512. The training set is a tensor before the
timer. Prints one JSON line: {"torch": version, "lenet_sps": samples/s, "lenet_examples": N}.
usage: python torch_lenet_bench.py MNIST_DIR [N]"""
import gzip, json, struct, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(2)
def idx(p):
    d = gzip.open(p, "rb").read(); nd = struct.unpack(">I", d[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * nd, d[4:4 + 4 * nd]); return np.frombuffer(d[4 + 4 * nd:], np.uint8).reshape(dims)
m = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 60000
xtr = torch.tensor(idx(f"{m}/train-images-idx3-ubyte.gz")[:n], dtype=torch.float32).unsqueeze(1) / 255
ytr = torch.tensor(idx(f"{m}/train-labels-idx1-ubyte.gz")[:n], dtype=torch.long)
n = len(ytr)
class Lenet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2); self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120); self.fc2 = nn.Linear(120, 84); self.fc3 = nn.Linear(84, 10)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2); x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))
def epoch(model, count):
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    perm = torch.randperm(count)
    for s in range(0, count, 128):
        i = perm[s:s + 128]; opt.zero_grad(); F.cross_entropy(model(xtr[i]), ytr[i]).backward(); opt.step()
torch.manual_seed(42)
epoch(Lenet(), min(512, n))  # warm-up
model = Lenet()
t0 = time.perf_counter()
epoch(model, n)
print(json.dumps({"torch": torch.__version__, "lenet_sps": round(n / (time.perf_counter() - t0)), "lenet_examples": n}))
