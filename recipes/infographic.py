"""An infographic with exact quoted text, then German and Spanish versions of it.

Makes three images: ``infographic`` (a brewing guide built around the coffee photo
and the brand logo, every label given in quotes so it is rendered verbatim: quoted
text is never rewritten, so the "@peakcoffee" footer stays as typed), and ``german``
and ``spanish`` (the same layout with each label replaced by its quoted translation).
"""

import editgraph as eg

LABELS = {
    "English": (
        "How to Brew Pour-Over Coffee",
        ["1. Grind 20 g", "2. Bloom 30 s", "3. Pour 300 ml", "4. Wait 3 min"],
    ),
    "German": (
        "So gelingt Filterkaffee",
        ["1. 20 g mahlen", "2. 30 s quellen lassen", "3. 300 ml aufgießen", "4. 3 Min. warten"],
    ),
    "Spanish": (
        "Cómo preparar café de filtro",
        ["1. Muele 20 g", "2. Deja reposar 30 s", "3. Vierte 300 ml", "4. Espera 3 min"],
    ),
}


def quoted(steps: list[str]) -> str:
    """The step labels as a quoted, comma-separated list."""
    return ", ".join(f'"{step}"' for step in steps)


def recipe(accent: str = "#C8102E", footer: str = "@peakcoffee") -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=768, height=1152)
    coffee = g.image("../examples/assets/coffee.jpg")
    logo = g.image("../examples/assets/logo.png")
    title, steps = LABELS["English"]
    infographic = g.edit(
        f'A clean vertical infographic titled "{title}" in bold sans-serif at the top, '
        f"the cup of coffee from {coffee} as a cut-out illustration in the centre, four "
        f"numbered steps down the right side with small line icons, labelled {quoted(steps)}, "
        f"accent lines in color {accent}, the logo from {logo} in the bottom left corner "
        f'and the footer "{footer}" in the bottom right; off-white background',
        name="infographic",
        output_format="png",
    )
    for language in ("German", "Spanish"):
        translated_title, translated_steps = LABELS[language]
        g.edit(
            f"Translate the text of {infographic} into {language}, keeping the layout, "
            f'fonts, colours, icons and logo: the title becomes "{translated_title}", '
            f"the steps become {quoted(translated_steps)} in the same order, and the "
            f'footer stays "{footer}"',
            name=language.lower(),
            output_format="png",
        )
    return g
