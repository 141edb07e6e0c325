"""A landing-page design mock with a brand logo, then a mobile version and a dark theme.

Makes three images: ``desktop`` (a 1536x960 landing page with the logo, a hero
headline and a call-to-action button in hex colours), ``mobile`` (the same page
re-laid out for a 768x1344 phone screen, the logo passed again so it stays crisp)
and ``dark`` (the mobile page in a dark theme).
"""

import editgraph as eg


def recipe(
    headline: str = "Trails worth the climb",
    button: str = "Plan your route",
    brand: str = "#2E4057",
    accent: str = "#E8AA14",
) -> eg.Graph:
    g = eg.Graph(model="flux.2-pro")
    logo = g.image("../examples/assets/logo.png")
    desktop = g.edit(
        f"A modern landing page design for an outdoor gear brand, flat UI mock-up in a "
        f"desktop browser window. Top-left: the logo from {logo}; a navigation bar with "
        f'"Shop", "Journal" and "About". A full-width hero photo of mountains at sunrise '
        f'with the headline "{headline}" in white bold sans-serif and a rounded button '
        f'"{button}" in color {accent}; a footer in color {brand}',
        name="desktop",
        width=1536,
        height=960,
        output_format="png",
    )
    mobile = g.edit(
        f"Turn the landing page from {desktop} into its mobile version for a phone "
        f"screen: the logo from {logo} centred in a slim header, a hamburger menu, the "
        f'hero photo cropped vertically, the headline "{headline}" on two lines and '
        f'the "{button}" button full width; same colours and fonts',
        name="mobile",
        width=768,
        height=1344,
        output_format="png",
    )
    g.edit(
        f"A dark-theme version of {mobile}: background in color #121417, text in white, "
        f"the button still in color {accent}; same layout and text",
        name="dark",
        width=768,
        height=1344,
        output_format="png",
    )
    return g
