"""Prompts in French and Korean feeding one composite, then a bilingual poster.

Makes four images: ``paris`` (the cat photo turned into a Paris rooftop scene,
prompted in French), ``seoul`` (the rocket photo launching over Seoul at night,
prompted in Korean), ``composite`` (the cat from the first watching the launch from
the second) and ``poster`` (the composite as a poster with a quoted French and Korean
title). Handles become "image N" in any language.
"""

import editgraph as eg


def recipe(
    title_fr: str = "Le chat et la fusée",
    title_ko: str = "고양이와 로켓",
    seed: int = 8,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=1024, height=768)
    cat = g.image("../examples/assets/cat.jpg")
    rocket = g.image("../examples/assets/rocket.jpg")
    paris = g.edit(
        f"Place le chat de l'{cat} sur un toit en zinc de Paris au crépuscule, la tour "
        "Eiffel au loin; garde la couleur et les rayures du chat",
        name="paris",
        seed=seed,
    )
    seoul = g.edit(
        f"{rocket}의 로켓이 밤하늘의 서울 위로 발사되는 장면으로 바꿔 주세요. 남산타워와 "
        "한강의 불빛이 보이고, 로켓의 모양과 불꽃은 그대로 유지해 주세요",
        name="seoul",
        seed=seed,
    )
    composite = g.edit(
        f"The cat from {paris} sits on the rooftop in the foreground and watches the "
        f"rocket launch from {seoul} rising in the distant sky; one consistent dusk light",
        name="composite",
    )
    g.edit(
        f'Une affiche de cinéma tirée de l\'{composite}, avec le titre "{title_fr}" en '
        f'haut et "{title_ko}" en dessous, en lettres blanches',
        name="poster",
        width=768,
        height=1024,
        output_format="png",
    )
    return g
