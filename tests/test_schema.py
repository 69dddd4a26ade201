from netflowgen.schema import FEATURE_NAMES, FEATURE_SET_HASH, FLOW_COLUMNS, LIGHT_FEATURE_NAMES


def test_feature_contract_order_and_count():
    assert len(FEATURE_NAMES) == 86 and len(set(FEATURE_NAMES)) == 86
    assert FEATURE_NAMES[:6] == ("in_all_pkt", "in_all_byt", "in_all_flow",
                                 "out_all_pkt", "out_all_byt", "out_all_flow")
    assert FEATURE_NAMES[6] == "in_icmp_pkt" and FEATURE_NAMES[29] == "out_other_flow"
    assert FEATURE_NAMES[30] == "in_port0_pkt" and FEATURE_NAMES[77] == "out_portpriv_flow"
    assert FEATURE_NAMES[78:] == tuple(f"out_flag{f}_flow" for f in (0, 16, 24, 2, 17, 18, 4, 25))
    assert LIGHT_FEATURE_NAMES == FEATURE_NAMES[:6]
    assert len(FEATURE_SET_HASH) == 16


def test_flow_columns_are_spec_names():
    assert FLOW_COLUMNS == ("ts_start", "ts_end", "src_ip", "dst_ip", "src_port", "dst_port", "proto",
                            "tcp_flags", "packets", "bytes", "sampling_rate", "exporter", "in_if",
                            "out_if")
