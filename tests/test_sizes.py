"""The AlexNet size table (docs/math.md §9) against brute-force parameter counting."""

from math import prod
from types import SimpleNamespace

import pytest

from kfac_ref.experiments import sizes
from kfac_ref.experiments.sizes import LayerSize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- an independent description of the three AlexNets: parameter tensor shapes ---


def alexnet_param_shapes(channels, groups):
    """{layer: [weight shape, bias shape]} exactly as a framework would allocate them."""
    c_ins = (3,) + tuple(channels[:-1])
    kernels = (11, 5, 3, 3, 3)
    shapes = {}
    for i, (c_in, c_out, k, g) in enumerate(zip(c_ins, channels, kernels, groups)):
        shapes[f"conv{i + 1}"] = [(c_out, c_in // g, k, k), (c_out,)]  # conv weight: (C_out, C_in/γ, kh, kw)
    shapes["fc6"] = [(4096, channels[-1] * 6 * 6), (4096,)]
    shapes["fc7"] = [(4096, 4096), (4096,)]
    shapes["fc8"] = [(1000, 4096), (1000,)]
    return shapes


SHAPES = {
    "alexnet": alexnet_param_shapes((96, 256, 384, 384, 256), (1, 1, 1, 1, 1)),
    "alexnet-grouped": alexnet_param_shapes((96, 256, 384, 384, 256), (1, 2, 1, 2, 2)),
    "alexnet-torchvision": alexnet_param_shapes((64, 192, 384, 256, 256), (1, 1, 1, 1, 1)),
}
GROUPS = {"alexnet": 1, "alexnet-grouped": {"conv2": 2, "conv4": 2, "conv5": 2}, "alexnet-torchvision": 1}
EXPECTED_TOTAL = {"alexnet": 62_378_344, "alexnet-grouped": 60_965_224, "alexnet-torchvision": 61_100_840}

# docs/math.md §9, row by row: layer, d_in, d_out, params, Fisher block entries as printed there
MATH_MD_TABLE = [
    ("conv1", 364, 96, 34_944, "1.22e9"),
    ("conv2", 2_401, 256, 614_656, "3.78e11"),
    ("conv3", 2_305, 384, 885_120, "7.83e11"),
    ("conv4", 3_457, 384, 1_327_488, "1.76e12"),
    ("conv5", 3_457, 256, 884_992, "7.83e11"),
    ("fc6", 9_217, 4_096, 37_752_832, "1.43e15"),
    ("fc7", 4_097, 4_096, 16_781_312, "2.82e14"),
    ("fc8", 4_097, 1_000, 4_097_000, "1.68e13"),
]


@pytest.mark.parametrize("arch", list(EXPECTED_TOTAL))
def test_total_params_equal_brute_force_count_of_tensor_entries(arch):
    brute = sum(prod(shape) for tensors in SHAPES[arch].values() for shape in tensors)
    assert brute == EXPECTED_TOTAL[arch]
    assert sizes.totals(sizes.layer_sizes(arch))["params"] == EXPECTED_TOTAL[arch]


@pytest.mark.parametrize("arch", list(EXPECTED_TOTAL))
def test_each_layer_params_and_fisher_blocks_equal_brute_force(arch):
    rows = sizes.layer_sizes(arch)
    assert [r.name for r in rows] == list(SHAPES[arch])
    for r in rows:
        n = sum(prod(shape) for shape in SHAPES[arch][r.name])
        g = GROUPS[arch] if isinstance(GROUPS[arch], int) else GROUPS[arch].get(r.name, 1)
        assert r.groups == g
        assert r.params == n
        # γ independent groups, each a dense block over its n/γ parameters
        assert r.fisher_entries == g * (n // g) ** 2
        assert r.a_entries == g * r.d_in**2
        assert r.g_entries == g * (r.d_out // g) ** 2


@pytest.mark.parametrize("name, d_in, d_out, params, fisher", MATH_MD_TABLE)
def test_ungrouped_alexnet_reproduces_math_md_table_row(name, d_in, d_out, params, fisher):
    row = {r.name: r for r in sizes.layer_sizes("alexnet")}[name]
    assert (row.d_in, row.d_out, row.groups) == (d_in, d_out, 1)
    assert row.params == params == d_in * d_out
    assert row.fisher_entries == (d_in * d_out) ** 2
    assert sizes.sci(row.fisher_entries) == fisher
    assert (row.a_entries, row.g_entries) == (d_in**2, d_out**2)
    line = f"| {name} | {d_in:,} → {d_out:,} | {params:,} | {fisher} |"
    assert line in sizes.format_table(sizes.layer_sizes("alexnet"), "AlexNet")


def test_totals_full_fisher_is_params_squared_and_factors_are_a_plus_g():
    rows = sizes.layer_sizes("alexnet")
    t = sizes.totals(rows)
    assert t["full_fisher_entries"] == 62_378_344**2
    assert t["factor_entries"] == sum(r.a_entries + r.g_entries for r in rows)
    assert t["fisher_entries"] == sum((r.d_in * r.d_out) ** 2 for r in rows)
    assert t["factor_entries"] < t["fisher_entries"] < t["full_fisher_entries"]


def test_main_alexnet_prints_the_three_totals_with_commas(capsys):
    assert sizes.main(["--arch", "alexnet"]) == 0
    out = capsys.readouterr().out
    for total in ("62,378,344", "60,965,224", "61,100,840"):
        assert total in out


def test_main_out_writes_markdown_and_png(tmp_path, capsys):
    assert sizes.main(["--arch", "alexnet-torchvision", "--out", str(tmp_path), "--quiet"]) == 0
    assert "61,100,840" in capsys.readouterr().out
    assert "61,100,840" in (tmp_path / "sizes_alexnet-torchvision.md").read_text(encoding="utf-8")
    assert (tmp_path / "sizes_alexnet-torchvision.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_sizes_writes_a_png_and_no_temporary_file(tmp_path):
    path = sizes.plot_sizes(sizes.layer_sizes("alexnet"), tmp_path / "fig.png", "AlexNet")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_plot_sizes_draws_a_grouped_network_with_its_note(tmp_path):
    path = sizes.plot_sizes(sizes.layer_sizes("alexnet-grouped"), tmp_path / "grouped.png", "grouped")
    assert path.stat().st_size > 0 and list(tmp_path.iterdir()) == [path]


def test_plot_sizes_failure_leaves_no_half_written_file(tmp_path):
    with pytest.raises(ValueError):
        sizes.plot_sizes(sizes.layer_sizes("alexnet"), tmp_path / "fig.not-a-format", "AlexNet")
    assert list(tmp_path.iterdir()) == []


def test_unknown_arch_is_an_error(capsys):
    with pytest.raises(ValueError, match="alexnet-grouped"):
        sizes.layer_sizes("vgg16")
    with pytest.raises(SystemExit) as exc:
        sizes.main(["--arch", "vgg16"])
    assert exc.value.code != 0
    assert "vgg16" in capsys.readouterr().err


def test_sizes_from_layers_reads_kind_a_dim_g_dim_name():
    layers = [
        SimpleNamespace(name="conv", kind="conv", a_dim=3 * 3 * 3 + 1, g_dim=8),
        SimpleNamespace(name="fc", kind="linear", a_dim=65, g_dim=10),
    ]
    rows = sizes.sizes_from_layers(layers)
    assert rows == [LayerSize("conv", "conv", 28, 8), LayerSize("fc", "linear", 65, 10)]
    assert sizes.totals(rows)["params"] == 28 * 8 + 65 * 10
    with pytest.raises(ValueError, match="kind"):
        sizes.sizes_from_layers([SimpleNamespace(name="bn", kind="batchnorm", a_dim=1, g_dim=1)])


def test_layer_size_rejects_inconsistent_groups():
    with pytest.raises(ValueError, match="γ"):
        LayerSize("conv2", "conv", 1201, 255, groups=2)
    with pytest.raises(ValueError, match="groups"):
        LayerSize("fc", "linear", 10, 4, groups=2)


@pytest.mark.parametrize("arch", sizes.PROJECT_MODELS)
def test_project_models_sizes_match_their_parameter_counts(arch):
    """The size table of kfac_ref's own networks counts exactly the model's P parameters."""
    model = sizes._project_models()[arch]()
    rows = sizes.layer_sizes(arch)
    assert sizes.totals(rows)["params"] == model.num_params
    for row, layer in zip(rows, model.param_layers()):
        assert (row.d_in, row.d_out) == (layer.a_dim, layer.d_out)
        assert row.fisher_entries == layer.num_params**2


def test_resnet50_table_with_its_batch_norms_counts_torchvisions_25_557_032_parameters():
    rows = sizes.layer_sizes("resnet50")
    assert len(rows) == 54 and sum(r.kind == "conv" for r in rows) == 53
    assert sizes.totals(rows)["params"] + sizes.NORM_PARAMS["resnet50"] == 25_557_032
    assert rows[0].d_in == 3 * 7 * 7 and rows[-1].d_in == 2049  # convs without bias, fc with
