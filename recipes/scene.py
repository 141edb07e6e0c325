"""Put a person, a cat and a bird from three photos into one scene, then relight it.

Makes three images: ``scene`` (the person from image 1 petting the cat from image 2,
the bird from image 3 beside them: literal image indexing against an explicit
reference list), ``golden`` (the same scene at golden hour) and ``portrait`` (a
vertical crop of the golden-hour scene for a phone wallpaper).
"""

import editgraph as eg


def recipe(
    place: str = "a sunlit park bench under an oak tree",
    light: str = "golden hour, low warm sun from the left, long soft shadows",
    seed: int = 42,
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro", width=1024, height=768)
    person = g.image("../examples/assets/person.jpg")
    cat = g.image("../examples/assets/cat.jpg")
    bird = g.image("../examples/assets/bird.png")
    scene = g.edit(
        "The person from image 1 is petting the cat from image 2, the bird from image 3 "
        f"is next to them. They sit on {place}. Keep the face of the person from image 1, "
        "the fur pattern of the cat from image 2 and the blue feathers of the bird from "
        "image 3; photorealistic, 35mm lens",
        refs=[person, cat, bird],
        name="scene",
        seed=seed,
    )
    golden = g.edit(
        f"Change the lighting of {scene} to {light}; keep the person, the cat, the bird "
        "and their poses exactly as they are",
        name="golden",
    )
    g.edit(
        f"Reframe {golden} as a vertical shot centred on the person and the cat, the bird "
        "still visible; same light and colours",
        name="portrait",
        width=768,
        height=1024,
    )
    return g
