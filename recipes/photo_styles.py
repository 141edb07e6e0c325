"""One portrait shot in five photographic looks, then a contact sheet of all five.

BFL's FLUX prompting guide names photorealistic styles by era, camera and film stock:
modern digital, 2000s digicam, 80s vintage and analog film; its camera-simulation
example adds a medium-format look. Makes seven images: ``base`` (a café portrait of
the person photo), one edit per style (``modern_digital``, ``digicam``, ``vintage``,
``analog_film``, ``medium_format``), each restyling the base, and ``contact_sheet``
(the five looks side by side, five references).
"""

import editgraph as eg

STYLES = {
    "modern_digital": "shot on Sony A7IV, clean and sharp, high dynamic range",
    "digicam": "early digital camera, slight noise, on-camera flash, candid, 2000s digicam style",
    "vintage": "film grain, warm colour cast, soft focus, 80s vintage photo",
    "analog_film": "shot on Kodak Portra 400, natural grain, organic colours",
    "medium_format": "shot on Hasselblad X2D, 80mm lens, f/2.8, natural window light",
}


def recipe(
    setting: str = "sitting at a small table by the window of a café, holding a cup",
    seed: int = 21,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=768, height=1024)
    person = g.image("../examples/assets/person.jpg")
    base = g.edit(
        f"A waist-up portrait of the person from {person} {setting}; keep the face and "
        "hair, neutral daylight",
        name="base",
        seed=seed,
    )
    looks = [
        g.edit(
            f"Restyle {base} in this photographic look: {description}; keep the person, the "
            "pose, the framing and the café",
            name=style,
        )
        for style, description in STYLES.items()
    ]
    g.edit(
        "A contact sheet of five prints in one row on a light table, left to right "
        "images 1, 2, 3, 4 and 5, each print labelled underneath in small type: "
        + ", ".join(f'"{style.replace("_", " ")}"' for style in STYLES),
        refs=looks,
        name="contact_sheet",
        width=1920,
        height=576,
    )
    return g
