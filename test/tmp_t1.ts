import { torchSave, ordered, PyTensor, dict, tuple } from './fixtures/torch-save';
torchSave('/tmp/a.pth', ordered({ 'w': new PyTensor('F32', [2,3], [1,2,3,4,5,6]), 'p': new PyTensor('F16', [2], [0.5, -1], {parameter: true}), 'n': 3, 'cfg': dict({a: tuple(1, 2.5, 'x', null, true), big: 2**40, neg: -5, l: [1,2]}) }));
