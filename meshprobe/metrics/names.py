"""Every metric name meshprobe exports, in one place: dashboards, alerts and tests import these.

Renaming one is a breaking change for users' dashboards and alerts: note it in the changelog.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "meshprobe_"

# Edge metrics: labels source_cluster, target_cluster, target, scope, probe.
PROBE_SUCCESS: Final = "meshprobe_probe_success"
PROBE_DURATION: Final = "meshprobe_probe_duration_seconds"
PROBE_PHASE_DURATION: Final = "meshprobe_probe_phase_duration_seconds"
PROBES: Final = "meshprobe_probes"  # counter: exposed as meshprobe_probes_total
PROBE_FAILURES: Final = "meshprobe_probe_failures"  # counter, label reason
LATENCY_BUDGET: Final = "meshprobe_latency_budget_seconds"
PROBE_OVER_BUDGET: Final = "meshprobe_probe_over_budget"  # counter
TLS_VERIFIED: Final = "meshprobe_tls_verified"
TLS_CERT_EXPIRY: Final = "meshprobe_tls_cert_expiry_timestamp_seconds"  # label role
# labels identity, root_fingerprint_sha256, version, cipher
TLS_PEER_INFO: Final = "meshprobe_tls_peer_info"
SERVED: Final = "meshprobe_served"  # counter, label served_by_cluster
TCP_RTT: Final = "meshprobe_tcp_rtt_seconds"  # gauge, Linux only
TCP_RETRANSMITS: Final = "meshprobe_tcp_retransmits"  # counter, Linux only
GRPC_STATUS_CODE: Final = "meshprobe_grpc_status_code"  # grpc edges, last call with a status
GRPC_SERVING_STATUS: Final = "meshprobe_grpc_serving_status"  # grpc edges, last health answer

# Instance metrics.
TRUST_ROOT_INFO: Final = "meshprobe_trust_root_info"
TRUST_ROOT_EXPIRY: Final = "meshprobe_trust_root_expiry_timestamp_seconds"
TRUST_BUNDLE_RELOAD_SUCCESS: Final = "meshprobe_trust_bundle_reload_success"
TRUST_BUNDLE_RELOAD_TIMESTAMP: Final = "meshprobe_trust_bundle_reload_timestamp_seconds"
TRUST_BUNDLE_SKIPPED_ROOTS: Final = "meshprobe_trust_bundle_skipped_roots"
CLIENT_CERT_EXPIRY: Final = "meshprobe_client_cert_expiry_timestamp_seconds"
CLIENT_CERT_NOT_BEFORE: Final = "meshprobe_client_cert_not_before_timestamp_seconds"
CLIENT_CERT_RELOAD_SUCCESS: Final = "meshprobe_client_cert_reload_success"
PEER_UP: Final = "meshprobe_peer_up"
PEER_TRUST_MATCH: Final = "meshprobe_peer_trust_match"
TARGETS: Final = "meshprobe_targets"
DISCOVERY_UP: Final = "meshprobe_discovery_up"
DISCOVERY_ERRORS: Final = "meshprobe_discovery_errors"  # counter
EVENT_LOOP_LAG: Final = "meshprobe_event_loop_lag_seconds"
BUILD_INFO: Final = "meshprobe_build_info"
CONFIG_RELOAD_SUCCESS: Final = "meshprobe_config_reload_success"
CONFIG_RELOAD_TIMESTAMP: Final = "meshprobe_config_reload_timestamp_seconds"

EDGE_LABELS: Final = ("source_cluster", "target_cluster", "target", "scope", "probe")
