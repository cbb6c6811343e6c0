"""infra/milvus-distributed/: the Helm values parse, use only the milvus-helm chart's value names, carry no
credentials, turn authentication on, and fit the engine settings its README gives (no Kubernetes here: the file is
checked, not installed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from indexing.milvus_items import Layout, server_version, split_upsert
from infra.settings import MilvusSettings

HERE = Path(__file__).resolve().parents[3] / "infra" / "milvus-distributed"
VALUES = HERE / "values.yaml"
README = HERE / "README.md"

#: the top-level values of the zilliztech/milvus-helm chart (charts/milvus/values.yaml)
CHART_TOP = {
    "nameOverride", "fullnameOverride", "cluster", "image", "nodeSelector", "tolerations", "affinity",
    "securityContext", "topologySpreadConstraints", "labels", "annotations", "volumes", "volumeMounts", "streaming",
    "customConfigMap", "extraConfigFiles", "service", "ingress", "serviceAccount", "metrics", "livenessProbe",
    "readinessProbe", "log", "heaptrack", "standalone", "proxy", "rootCoordinator", "queryCoordinator", "queryNode",
    "indexCoordinator", "indexNode", "dataCoordinator", "dataNode", "mixCoordinator", "streamingNode", "attu",
    "minio", "etcd", "pulsarv3", "pulsar", "kafka", "woodpecker", "externalS3", "externalGcs", "externalEtcd",
    "externalPulsar", "externalKafka", "tei",
}
#: the keys a component section of the chart has (proxy, queryNode, ...)
COMPONENT_KEYS = {"enabled", "replicas", "resources", "nodeSelector", "affinity", "tolerations", "securityContext",
                  "topologySpreadConstraints", "extraEnv", "heaptrack", "profiling", "strategy", "annotations", "hpa",
                  "disk", "activeStandby", "service", "http", "tls"}
COMPONENTS = ("proxy", "mixCoordinator", "queryNode", "dataNode", "indexNode")


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _readme_env() -> dict[str, str]:
    return dict(re.findall(r"^(THAW_MILVUS__[A-Z_]+)=(\S+)", README.read_text(), flags=re.M))


def test_only_the_charts_value_names() -> None:
    v = _values()
    assert set(v) <= CHART_TOP, set(v) - CHART_TOP
    for name in COMPONENTS:
        assert set(v[name]) <= COMPONENT_KEYS, (name, set(v[name]) - COMPONENT_KEYS)
    assert v["cluster"]["enabled"] is True and v["image"]["all"]["repository"] == "milvusdb/milvus"


def test_no_credentials_and_authentication_on() -> None:
    text = VALUES.read_text()
    for word in ("minioadmin", "accessKey", "secretKey", "password", "Milvus:"):
        assert word not in text, word
    user = yaml.safe_load(_values()["extraConfigFiles"]["user.yaml"])
    assert user["common"]["security"]["authorizationEnabled"] is True
    install = README.read_text()
    assert '--set minio.accessKey="$MINIO_ACCESS_KEY"' in install
    assert '--set minio.secretKey="$MINIO_SECRET_KEY"' in install


def test_the_engine_settings_of_the_readme_fit_the_cluster() -> None:
    v, env = _values(), _readme_env()
    s = MilvusSettings(uri=env["THAW_MILVUS__URI"], replicas=int(env["THAW_MILVUS__REPLICAS"]),
                       shards=int(env["THAW_MILVUS__SHARDS"]), partitions=int(env["THAW_MILVUS__PARTITIONS"]))
    assert 1 < s.replicas <= v["queryNode"]["replicas"] - 1  # a spare node to reload a lost replica onto
    assert s.shards <= v["dataNode"]["replicas"]
    assert s.partitions == MilvusSettings().partitions
    assert env["THAW_MILVUS__TOKEN"].startswith("thaw:$")  # from the environment, not written down


def test_the_server_version_gets_native_upserts_on_a_partition_key() -> None:
    version = server_version(_values()["image"]["all"]["tag"])
    assert version is not None
    assert split_upsert(Layout("created_day", True, 16), version) is False
    assert split_upsert(Layout("created_day", True, 16), server_version("v2.3.5")) is True
