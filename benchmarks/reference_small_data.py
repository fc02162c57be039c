"""A hand-written small-data recipe, outside the toolkit, as the suite's reference row: torchvision's ResNet18
with a 3x3 stride-1 stem and no max-pool, random resized crop (scale 0.35-1) + horizontal flip + colour jitter
0.3, AdamW lr 2e-3 wd 0.05, one-cycle, class-balanced sampling, label smoothing 0.1, 40 epochs, flip TTA.
The last epoch's weights are tested (nothing is chosen on the test split).

    python benchmarks/reference_small_data.py DATASET_FOLDER [--seed=0] [--epochs=40] [--out=result.json]
"""
import argparse
import json
import time

import torch
import torchvision
from sklearn.metrics import f1_score
from torchvision import transforms as T

parser = argparse.ArgumentParser()
parser.add_argument('folder', help='a folder with train/ and test/ image-class folders')
parser.add_argument('--seed', type=int, default=0)
parser.add_argument('--epochs', type=int, default=40)
parser.add_argument('--out', default='')
args = parser.parse_args()
start = time.time()
torch.manual_seed(args.seed)
train = torchvision.datasets.ImageFolder(f'{args.folder}/train')
size = train[0][0].size[0]
norm = T.Normalize([0.5] * 3, [0.25] * 3)
train.transform = T.Compose([T.RandomResizedCrop(size, scale=(0.35, 1)), T.RandomHorizontalFlip(),
                             T.ColorJitter(0.3, 0.3, 0.3), T.ToTensor(), norm])
test = torchvision.datasets.ImageFolder(f'{args.folder}/test', T.Compose([T.Resize((size, size)), T.ToTensor(), norm]))
counts = torch.bincount(torch.tensor(train.targets))
sampler = torch.utils.data.WeightedRandomSampler(1.0 / counts[train.targets], len(train))
loader = torch.utils.data.DataLoader(train, 64, sampler=sampler, drop_last=len(train) > 64)
model = torchvision.models.resnet18(num_classes=len(train.classes))
model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
model.maxpool = torch.nn.Identity()
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=args.epochs * len(loader))
loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
for epoch in range(args.epochs):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        schedule.step()
model.eval()
predictions = []
with torch.no_grad():
    for x, _ in torch.utils.data.DataLoader(test, 256):
        predictions.append((model(x).softmax(1) + model(x.flip(3)).softmax(1)).argmax(1))
predicted, truth = torch.cat(predictions).numpy(), test.targets
result = {'test_acc': float((predicted == truth).mean()), 'seconds': time.time() - start,
          'macro_f1': float(f1_score(truth, predicted, average='macro'))}
print(json.dumps(result))
if args.out:
    with open(args.out, 'w') as f:
        json.dump(result, f)
