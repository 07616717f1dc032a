"""Darknet's cfg reading rules, typed options and the writer's round trip.

Why: every later number depends on reading the cfg exactly as Darknet does (whitespace,
comments, first-wins duplicates), and every mistake in a cfg must name the file, line, section
and key so a user can jump to it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from reference_data import CFG_CORPUS
from darkcsp.config.reader import Section, parse_cfg, read_cfg
from darkcsp.config.writer import format_cfg
from darkcsp.errors import CfgError, CfgWarning
from darkcsp.lower import build_graph
from darkcsp.network import Darknet

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"


def conv(**options: object) -> str:
    body = {"filters": 4, "size": 3, "stride": 1, "pad": 1, "activation": "leaky", **options}
    return "[convolutional]\n" + "".join(f"{k}={v}\n" for k, v in body.items())


def write(tmp_path: Path, text: str, name: str = "model.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_no(text: str, line: str, occurrence: int = 1) -> int:
    """1-based number of the ``occurrence``-th line of ``text`` equal to ``line``."""
    numbers = [n for n, text_line in enumerate(text.splitlines(), start=1) if text_line == line]
    return numbers[occurrence - 1]


def build_quietly(cfg: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        return build_graph(read_cfg(cfg))  # type: ignore[arg-type]


def error_of(tmp_path: Path, text: str) -> CfgError:
    """The CfgError building ``text`` (as a file) raises."""
    path = write(tmp_path, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        with pytest.raises(CfgError) as info:
            build_graph(read_cfg(path))
    return info.value


# -- reader rules -----------------------------------------------------------------------------

def test_whitespace_is_removed_anywhere_in_a_line() -> None:
    sections = parse_cfg("[ net ]\n w idth = 3 2\t\nheight=32\r\nchannels=3\n"
                         "[route]\nlayers = -1, 0\n")
    assert sections[0].type == "net"
    assert sections[0].get("width") == "32"
    assert sections[0].get("height") == "32"
    assert sections[1].get("layers") == "-1,0"


def test_comment_lines_and_blank_lines_are_skipped() -> None:
    sections = parse_cfg("# a comment\n; another\n\n[net]\n  # indented comment\nwidth=32\n"
                         ";height=99\nheight=16\nchannels=3\n")
    assert len(sections) == 1
    assert {k: e.value for k, e in sections[0].entries.items()} == {
        "width": "32", "height": "16", "channels": "3"}


def test_inline_hash_comment_is_cut_from_values() -> None:
    sections = parse_cfg(NET + "[route]\nlayers=-1,0###P6\n[convolutional]\nfilters=16 # x\n"
                         "activation=leaky#why\n")
    assert sections[1].get("layers") == "-1,0"
    assert sections[2].get("filters") == "16"
    assert sections[2].get("activation") == "leaky"


def test_duplicate_key_first_value_wins_with_a_warning() -> None:
    with pytest.warns(CfgWarning, match=r"x\.cfg:3 \[net\].*duplicate key 'batch'"):
        sections = parse_cfg("[net]\nbatch=1\nbatch=64\n", "x.cfg")
    assert sections[0].get("batch") == "1"
    assert sections[0].line_of("batch") == 2


def test_network_is_an_alias_of_net() -> None:
    graph = build_quietly("[network]\nwidth=8\nheight=8\nchannels=3\n" + conv())
    assert (graph.net.width, graph.net.height, graph.net.channels) == (8, 8, 3)


@pytest.mark.parametrize("text", ["[convolutional]\nfilters=4\n",
                                  "[route]\nlayers=0\n" + NET])
def test_first_section_must_be_net(text: str) -> None:
    with pytest.raises(CfgError, match=r"x\.cfg:1 \[(convolutional|route)\].*first section"):
        parse_cfg(text, "x.cfg")


def test_option_before_any_section_is_an_error_with_its_line() -> None:
    with pytest.raises(CfgError, match=r"x\.cfg:2: option 'width=32' before the first"):
        parse_cfg("# header\nwidth=32\n[net]\n", "x.cfg")


def test_empty_cfg_is_an_error() -> None:
    with pytest.raises(CfgError, match="no sections"):
        parse_cfg("# only a comment\n\n", "x.cfg")


def test_malformed_section_header() -> None:
    with pytest.raises(CfgError, match=r"x\.cfg:5: malformed section header"):
        parse_cfg(NET + "[convolutional\n", "x.cfg")


def test_empty_value_is_ignored_with_a_warning() -> None:
    with pytest.warns(CfgWarning, match=r"x\.cfg:6 \[convolutional\].*'size' has an empty "):
        sections = parse_cfg(NET + "[convolutional]\nsize=\nsize=3\n", "x.cfg")
    assert sections[1].get("size") == "3"  # the empty line did not count as "first"


def test_line_without_equals_is_ignored_with_a_warning() -> None:
    with pytest.warns(CfgWarning, match=r"x\.cfg:5 .*no key=value"):
        sections = parse_cfg(NET + "just_a_word\n", "x.cfg")
    assert "just_a_word" not in sections[0].entries


def test_unknown_key_warns_with_place_and_the_build_goes_on(tmp_path: Path) -> None:
    path = write(tmp_path, NET + conv(bogus_key=7))
    with pytest.warns(CfgWarning) as record:
        model = Darknet(path)
    messages = [str(w.message) for w in record]
    assert any(f"{path}:11 [convolutional] bogus_key" in m and "unknown key" in m
               for m in messages), messages
    assert model.layer_graph.nodes[0].out_shape.c == 4


def test_read_cfg_accepts_path_text_and_pathlike(tmp_path: Path) -> None:
    text = NET + conv()
    path = write(tmp_path, text)
    by_str, by_path, by_text = read_cfg(str(path)), read_cfg(path), read_cfg(text)
    assert by_str[1].source == str(path)
    assert by_text[1].source == "<cfg text>"
    assert all(a.same_content(b) and b.same_content(c)
               for a, b, c in zip(by_str, by_path, by_text))


def test_missing_file_is_a_cfg_error(tmp_path: Path) -> None:
    with pytest.raises(CfgError, match="cannot read cfg file"):
        read_cfg(tmp_path / "nope.cfg")


# -- typed options ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("filters", "abc", "expected an integer, got 'abc'"),
    ("size", "nan", "expected an integer, got 'nan'"),
    ("stride", "0", "below the minimum"),
    ("filters", "99999999999", "out of range: Darknet reads integers as 32-bit"),
    ("activation", "leeky", "'leeky' is not one of"),
])
def test_bad_conv_value_names_file_line_section_and_key(tmp_path: Path, key: str, value: str,
                                                        expected: str) -> None:
    text = NET + conv(**{key: value})
    line = 1 + text.splitlines().index(f"{key}={value}")
    error = error_of(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'model.cfg'}:{line} [convolutional] {key}: ")
    assert expected in str(error)
    assert (error.line, error.section, error.key) == (line, "convolutional", key)


@pytest.mark.parametrize("key, value, read_as", [
    ("filters", "1e1", 1),      # atoi stops at 'e': Python's float() would say 10
    ("filters", "1_6", 1),      # atoi stops at '_': Python's int() would say 16
    ("filters", "2.5", 2),
    ("size", "1e308", 1),
    ("filters", " +7 filters", 7),
])
def test_integers_are_read_as_c_atoi_with_a_warning(tmp_path: Path, key: str, value: str,
                                                    read_as: int) -> None:
    text = NET + conv(**{key: value})
    line = 1 + text.splitlines().index(f"{key}={value}")
    path = write(tmp_path, text)
    with pytest.warns(CfgWarning) as caught:
        graph = build_graph(read_cfg(path))
    messages = [str(w.message) for w in caught if f"{key}:" in str(w.message)]
    assert any(m.startswith(f"{path}:{line} [convolutional] {key}: ") and "atoi" in m
               for m in messages), messages
    assert graph.nodes[0].opts[key] == read_as


def test_floats_are_read_as_c_atof(tmp_path: Path) -> None:
    path = write(tmp_path, NET.replace("[net]\n", "[net]\nmomentum=0.5x\ndecay=1_0\n") + conv())
    with pytest.warns(CfgWarning, match="atof"):
        graph = build_graph(read_cfg(path))
    assert graph.net.momentum == 0.5
    assert graph.net.decay == 1.0


def test_bad_float_in_net(tmp_path: Path) -> None:
    error = error_of(tmp_path, NET + "momentum=fast\n" + conv())
    assert str(error).startswith(f"{tmp_path / 'model.cfg'}:5 [net] momentum: expected a number")


def test_bad_list_item(tmp_path: Path) -> None:
    text = NET + conv() + "[route]\nlayers=-1,x\n"
    error = error_of(tmp_path, text)
    assert f":{line_no(text, 'layers=-1,x')} [route] layers: " in str(error)


def test_missing_required_key_route_without_layers(tmp_path: Path) -> None:
    text = NET + conv() + "[route]\ngroups=1\n"
    error = error_of(tmp_path, text)
    assert f":{line_no(text, '[route]')} [route] layers: " in str(error)
    assert "required" in str(error)


def test_missing_required_key_shortcut_without_from(tmp_path: Path) -> None:
    error = error_of(tmp_path, NET + conv() + conv() + "[shortcut]\nactivation=linear\n")
    assert "[shortcut] from: " in str(error) and "required" in str(error)


def test_net_without_input_size(tmp_path: Path) -> None:
    error = error_of(tmp_path, "[net]\nwidth=32\nheight=32\n" + conv())
    assert ":1 [net] channels: " in str(error)


def test_unknown_section_type(tmp_path: Path) -> None:
    text = NET + conv() + "[deconvolutional]\nfilters=3\n"
    error = error_of(tmp_path, text)
    line = line_no(text, "[deconvolutional]")
    assert str(error).startswith(f"{tmp_path / 'model.cfg'}:{line} [deconvolutional]: ")
    assert "unknown section type" in str(error)


def test_section_names_are_case_sensitive(tmp_path: Path) -> None:
    error = error_of(tmp_path, NET + "[Convolutional]\nfilters=3\n")
    assert "[Convolutional]" in str(error) and "unknown section type" in str(error)


def test_unknown_activation_in_shortcut(tmp_path: Path) -> None:
    text = NET + conv() + conv() + "[shortcut]\nfrom=-2\nactivation=foo\n"
    error = error_of(tmp_path, text)
    assert f":{line_no(text, 'activation=foo')} [shortcut] activation: " in str(error)


def test_defaults_match_darknet() -> None:
    graph = build_quietly(NET + "[convolutional]\nfilters=2\n[maxpool]\nstride=2\n")
    conv_opts, pool_opts = graph.nodes[0].opts, graph.nodes[1].opts
    assert conv_opts.activation == "logistic"  # Darknet's conv default, not linear
    assert (conv_opts.size, conv_opts.stride, conv_opts.pad) == (1, 1, 0)
    assert (pool_opts.size, pool_opts.padding) == (2, 1)  # size = stride, padding = size - 1
    assert graph.nodes[0].opts.given == frozenset({"filters"})


# -- writer round trip ------------------------------------------------------------------------

def _corpus() -> list[Path]:
    return sorted(CFG_CORPUS.rglob("*.cfg")) if CFG_CORPUS.is_dir() else []


def test_round_trip_inline() -> None:
    text = (NET + "# comment\n" + conv(filters="1 6") + "[yolo]\nmask = 0,1\n"
            "anchors = 10,14,  23,27\n")
    first = parse_cfg(text)
    again = parse_cfg(format_cfg(first, header="written by\nthe test"))
    assert len(first) == len(again)
    assert all(a.same_content(b) for a, b in zip(first, again))
    assert not Section("net", 1).same_content(Section("network", 1))


@pytest.mark.skipif(not _corpus(), reason="../shared/darknet-cfgs is not present")
def test_round_trip_every_corpus_cfg() -> None:
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        for path in _corpus():
            try:
                first = read_cfg(path)
            except CfgError:
                continue  # unreadable cfgs are tested elsewhere; the writer needs sections
            again = parse_cfg(format_cfg(first), str(path))
            if len(first) != len(again) or not all(
                    a.same_content(b) for a, b in zip(first, again)):
                failures.append(str(path.relative_to(CFG_CORPUS)))
    assert not failures
    assert len(_corpus()) > 100
