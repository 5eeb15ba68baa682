"""What a person sees in the Dagster UI, read through the GraphQL API the UI itself queries.

Two recordings are dropped and imported in process; the code location is then loaded from
``definitions.py`` in its own code server (as ``dagster dev`` does) over the same instance, and
the queries below are the ones the asset pages send. The partition filter is applied the way the
UI applies it (``ui-core/src/assets/AssetPartitions.tsx``: case-insensitive substring of keys).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from watch_pipeline_tests.defs.harness import add_source, age, files, run_request, tick

DEFINITIONS = Path(__file__).resolve().parents[2] / "watch_pipeline" / "definitions.py"

PARTITIONS = """
query AssetPartitions($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
      }
    }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition
        metadataEntries {
          label
          ... on TextMetadataEntry { text }
          ... on MarkdownMetadataEntry { mdStr }
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on BoolMetadataEntry { boolValue }
          ... on UrlMetadataEntry { url }
          ... on PathMetadataEntry { path }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}
"""


def _wav(path: Path, frequency: int) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={frequency}:duration=0.4", str(path)], check=True)


def _ui_filter(keys: list[str], typed: str) -> list[str]:
    """The asset page's partition filter: keys holding what was typed, ignoring case."""
    search = typed.lower().strip()
    return [key for key in keys if search in key.lower()]


def _shown(entry: dict) -> object:
    """The value an entry shows, whatever its type."""
    return next(value for label, value in entry.items() if label != "label")


def test_a_partition_is_found_in_the_ui_by_part_of_its_file_name(env):
    add_source(env, auto_transcribe=False)
    _wav(env["watch"] / "Board Meeting 2026.wav", 440)
    _wav(env["watch"] / "reading.wav", 660)
    for path in env["watch"].iterdir():
        age(path)
    requests, skip = tick(env)
    assert skip is None and len(requests) == 2
    for request in requests:
        assert run_request(env, request).success
    rows = files(env)
    board, reading = rows["Board Meeting 2026.wav"], rows["reading.wav"]

    with define_out_of_process_context(str(DEFINITIONS), "defs", env["instance"]) as context:
        node = execute_dagster_graphql(
            context, PARTITIONS, {"assetKey": {"path": ["media_object"]}}).data["assetNodeOrError"]
        (dimension,) = node["partitionKeysByDimension"]
        keys = dimension["partitionKeys"]
        assert sorted(node["assetPartitionStatuses"]["materializedPartitions"]) == sorted(keys)

        # A person who knows the file's name types part of it and finds its partition.
        (found,) = _ui_filter(keys, "board-meeting")
        assert found == f"board-meeting-2026-{board.imohash}"
        assert _ui_filter(keys, "Board-Meeting 2026") == []  # the key's words are joined by "-"
        assert _ui_filter(keys, "READING") == [f"reading-{reading.imohash}"]
        # The fingerprint still finds it too, as it did before keys were readable.
        assert _ui_filter(keys, board.imohash[:12]) == [found]

        shown = {}
        for asset in ("raw_file", "media_object"):
            result = execute_dagster_graphql(context, MATERIALIZATIONS, {
                "assetKey": {"path": [asset]}, "partitions": [found]})
            (materialization,) = result.data["assetOrError"]["assetMaterializations"]
            assert materialization["partition"] == found
            shown[asset] = {e["label"]: _shown(e) for e in materialization["metadataEntries"]}
    assert shown["raw_file"]["path"] == "Board Meeting 2026.wav"
    assert shown["raw_file"]["source"] == "watch"
    assert shown["media_object"]["object_key"].endswith("/Board Meeting 2026.wav")
