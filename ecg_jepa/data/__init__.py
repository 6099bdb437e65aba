"""ECG data: readers for real formats, the paper's preprocessing, the shard cache and the synthetic
generator."""
from .prepare import prepare, select_leads
from .records import Record, RecordError, read_record
from .shards import PrepareOptions, ShardDataset, prepare_data
from .sources import find_records, load_item
from .synthetic import SyntheticECG, synthesize

__all__ = [
    "PrepareOptions",
    "Record",
    "RecordError",
    "ShardDataset",
    "SyntheticECG",
    "find_records",
    "load_item",
    "prepare",
    "prepare_data",
    "read_record",
    "select_leads",
    "synthesize",
]
