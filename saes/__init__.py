"""Sparse autoencoders. Importing this package registers every architecture.

ReLU+L1 (`relu`), TopK (`topk`), BatchTopK (`batchtopk`), JumpReLU (`jumprelu`),
gradient TopK (`gsae`), Matryoshka BatchTopK (`matryoshka`).
"""

from saes.batchtopk import BatchTopKSAE
from saes.gsae import GradientSAE
from saes.jumprelu import JumpReLUSAE
from saes.matryoshka import MatryoshkaSAE
from saes.relu import ReLUSAE
from saes.topk import TopKSAE

__all__ = ["ReLUSAE", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "GradientSAE", "MatryoshkaSAE"]
