"""Numbers of the paper that the book prints beside ours, with their labels (book appendix, Restoring the paper).

Tables 1–10 (App. C.1, C.2) are FOUND in the extracted text; their captions were lost, so only the
head count of each table is known. Tables 11–12 are THIRD-PARTY: "as reported in a third-party
summary of the paper" (appendix: experiments); nobody here has checked them against the PDF.
"""

LABELS = {
    "tables_1_10": "FOUND (captions lost: only the head count is known)",
    "table_11": "THIRD-PARTY (as reported in a third-party summary of the paper)",
    "table_12": "THIRD-PARTY (as reported in a third-party summary of the paper)",
}

# App. C.1, argmax position: (heads, initialized, trained, ratio)
TABLES_C1 = [
    (
        6,
        [0.3497, 0.3546, 0.3233, 0.3738, 0.4851, 0.3496],
        [0.0302, 0.0323, 0.0310, 0.0305, 0.0315, 0.0317],
        [0.0863, 0.0910, 0.0958, 0.0817, 0.0650, 0.0906],
    ),
    (
        5,
        [0.3496, 0.3711, 0.3676, 0.3113, 0.3836],
        [0.1816, 0.1735, 0.2433, 0.2373, 0.2350],
        [0.5195, 0.4676, 0.6618, 0.7624, 0.6126],
    ),
    (
        5,
        [0.3167, 0.3248, 0.3413, 0.3234, 0.3261],
        [0.2099, 0.2531, 0.1160, 0.1382, 0.1405],
        [0.6629, 0.7793, 0.3400, 0.4273, 0.4308],
    ),
]
# App. C.2, second-largest position
TABLES_C2 = [
    (
        6,
        [0.4085, 0.4126, 0.3843, 0.4303, 0.5318, 0.4086],
        [0.4061, 0.4154, 0.4176, 0.4191, 0.4132, 0.4148],
        [0.9940, 1.0067, 1.0864, 0.9739, 0.7770, 1.0151],
    ),
    (
        5,
        [0.4093, 0.4272, 0.4249, 0.3746, 0.4390],
        [0.4095, 0.4099, 0.4097, 0.4082, 0.4083],
        [1.0005, 0.9594, 0.9641, 1.0895, 0.9299],
    ),
    (
        5,
        [0.3779, 0.3852, 0.4013, 0.3849, 0.3873],
        [0.4018, 0.4038, 0.4085, 0.4050, 0.4068],
        [1.0631, 1.0483, 1.0180, 1.0523, 1.0505],
    ),
    (
        5,
        [0.3854, 0.3954, 0.3863, 0.4124, 0.3869],
        [0.4044, 0.4077, 0.4017, 0.4109, 0.3996],
        [1.0493, 1.0313, 1.0399, 0.9963, 1.0329],
    ),
    (
        6,
        [0.4025, 0.3800, 0.4280, 0.4466, 0.4230, 0.3976],
        [0.4045, 0.4027, 0.4032, 0.4042, 0.4028, 0.4085],
        [1.0049, 1.0598, 0.9420, 0.9049, 0.9524, 1.0272],
    ),
    (
        7,
        [0.3813, 0.3905, 0.4137, 0.3863, 0.3812, 0.4053, 0.3964],
        [0.4001, 0.4026, 0.4046, 0.4042, 0.3996, 0.4067, 0.4029],
        [1.0493, 1.0310, 0.9781, 1.0461, 1.0483, 1.0034, 1.0163],
    ),
    (
        7,
        [0.4740, 0.3949, 0.3801, 0.3922, 0.3955, 0.4124, 0.4001],
        [0.4062, 0.4148, 0.4147, 0.4054, 0.4098, 0.3903, 0.3868],
        [0.8569, 1.0506, 1.0909, 1.0337, 1.0364, 0.9464, 0.9668],
    ),
]

# Table 11: mean best validation NMSE at T = 64, per D: {(D,D), (D-1,D), (D,D-1)}
TABLE_11 = {
    2: {"(D,D)": 5.89e-5, "(D-1,D)": 5.89e-2, "(D,D-1)": 3.67e-2},
    3: {"(D,D)": 6.37e-5, "(D-1,D)": 2.64e-2, "(D,D-1)": 2.07e-2},
    4: {"(D,D)": 6.92e-5, "(D-1,D)": 1.39e-2, "(D,D-1)": 1.30e-2},
    5: {"(D,D)": 4.69e-4, "(D-1,D)": 4.46e-3, "(D,D-1)": 7.19e-3},
    6: {"(D,D)": 1.99e-3, "(D-1,D)": 6.26e-3, "(D,D-1)": 7.67e-3},
}

# Table 12: mean best validation NMSE per T: {(2,2),E=24, (4,4),E=24, (4,4),E=48}
TABLE_12 = {
    8: {"(2,2),E=24": 0.086, "(4,4),E=24": 0.072, "(4,4),E=48": 0.080},
    16: {"(2,2),E=24": 0.843, "(4,4),E=24": 0.853, "(4,4),E=48": 0.856},
    32: {"(2,2),E=24": 0.957, "(4,4),E=24": 0.958, "(4,4),E=48": 0.959},
    64: {"(2,2),E=24": 0.985, "(4,4),E=24": 0.985, "(4,4),E=48": 0.985},
}


def head_counts(label: str) -> tuple[int, int]:
    """The head counts (h1, h2) a run label starts with: '(5,6)' → (5, 6), '(2,2) lr 3e-3' → (2, 2),
    '(4,4),E=24' → (4, 4)."""
    h1, h2 = label.split(")", 1)[0].lstrip("(").split(",")
    return int(h1), int(h2)


def config_kind(label: str) -> str:
    """'(3,3)' → '(D,D)', '(2,3)' → '(D-1,D)', '(3,2)' → '(D,D-1)' for Table 11 labels (words after the
    head counts, such as a lever's name, are ignored)."""
    h1, h2 = head_counts(label)
    return "(D,D)" if h1 == h2 else ("(D-1,D)" if h1 < h2 else "(D,D-1)")


KINDS = ("(D,D)", "(D-1,D)", "(D,D-1)")  # the three configurations of Sec. 6.1, in Table 11's order


def kind_heads(kind: str, D: int) -> tuple:
    """The head counts (h1, h2) of a Sec. 6.1 configuration at D: '(D-1,D)', 3 → (2, 3)."""
    return {"(D,D)": (D, D), "(D-1,D)": (D - 1, D), "(D,D-1)": (D, D - 1)}[kind]


def lever_of(label: str) -> str:
    """The recipe named after the head counts of a label: '(2,2) lr 3e-3' → 'lr 3e-3'; a plain
    configuration label → 'paper recipe'."""
    parts = label.split(" ", 1)
    return parts[1] if len(parts) == 2 else "paper recipe"


def dd_gap(errors: dict) -> float:
    """Table 11's separation at one D: the better of (D-1,D) and (D,D-1) over (D,D), from a
    {configuration: error} mapping (> 1 when (D,D) has the lowest error, as Prop. 1 predicts)."""
    return min(errors["(D-1,D)"], errors["(D,D-1)"]) / errors["(D,D)"]


def dd_seeds_separate(per_seed: dict) -> bool:
    """Whether every seed of (D,D) has a lower error than every seed of (D-1,D) and (D,D-1), from a
    {configuration: [error of each seed]} mapping: the separation a mean can hide or fake."""
    return max(per_seed["(D,D)"]) < min(min(per_seed[k]) for k in KINDS if k != "(D,D)")
