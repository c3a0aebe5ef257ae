"""Dataset readers: DAIC-WOZ, E-DAIC (AVEC 2019) and CMDC → one ``SessionRecord`` shape.

Every reader yields :class:`SessionRecord` objects with the transcript as ``TranscriptLine`` s (speakers
mapped Ellie → clinician, Participant → patient), audio references, a lazily-loaded visual table mapped
to a declared feature spec, and PHQ labels. Malformed or missing files raise ``DatasetError`` naming the
file (and line, where there is one). Formats: ``docs/data.md``.
"""

from training.data.cmdc import CmdcReader
from training.data.daic import DaicWozReader
from training.data.edaic import EDaicReader
from training.data.openface import OPENFACE_FEATURE_NAMES, OPENFACE_SPEC
from training.data.records import AudioRef, PHQLabels, SessionRecord
from training.data.visual_table import VisualTable

__all__ = [
    "OPENFACE_FEATURE_NAMES",
    "OPENFACE_SPEC",
    "AudioRef",
    "CmdcReader",
    "DaicWozReader",
    "EDaicReader",
    "PHQLabels",
    "SessionRecord",
    "VisualTable",
]
