"""Built-in prompts for the analysis report.

Ten short English paragraphs on varied topics, each long enough (over 300 characters) to give
at least 64 tokens with a byte tokenizer and, typically, with a 32k-vocabulary tokenizer.
`SHAKESPEARE` is the perturbation prompt of the paper's Figure 2: "greatest" can be swapped
for "best" (or a replacement of the same tokenised length).
"""

SHAKESPEARE = (
    "William Shakespeare was an English playwright, poet and actor. He is widely regarded as "
    "the greatest writer in the English language and the world's pre-eminent dramatist. He is "
    "often called England's national poet and the Bard of Avon. His extant works, including "
    "collaborations, consist of some 39 plays, 154 sonnets, three long narrative poems and a "
    "few other verses, some of uncertain authorship."
)

SWAP_WORD = "greatest"
# Tried in order; the first with the same tokenised length as SWAP_WORD is used.
SWAP_CANDIDATES = ("best", "foremost", "grandest", "finest")

DEFAULT_PROMPTS = (
    SHAKESPEARE,
    (
        "The water cycle describes how water evaporates from the surface of the earth, rises into "
        "the atmosphere, cools and condenses into clouds, and falls again as rain or snow. Some of "
        "it soaks into the ground and feeds rivers and lakes, some is taken up by plants, and most "
        "of it eventually returns to the sea, where the cycle begins once more."
    ),
    (
        "To bake a simple loaf of bread, mix flour, water, yeast and a pinch of salt into a soft "
        "dough. Knead it for about ten minutes until it becomes smooth and elastic, then cover it "
        "and leave it somewhere warm to rise until it has doubled in size. Shape the loaf, let it "
        "rise again, and bake it in a hot oven until the crust is golden and sounds hollow."
    ),
    (
        "A binary search finds an item in a sorted list by repeatedly halving the part of the list "
        "that could contain it. It compares the target with the middle element; if they are not "
        "equal, the half in which the target cannot lie is discarded and the search continues on "
        "the remaining half. It needs a number of steps that grows only with the logarithm of n."
    ),
    (
        "The Roman Empire at its height stretched from Britain in the north-west to Egypt and "
        "Mesopotamia in the east. Its roads, aqueducts and laws shaped the lands it ruled for "
        "centuries after its fall. Latin, the language of Rome, gave rise to Italian, French, "
        "Spanish, Portuguese and Romanian, and left thousands of words in English as well."
    ),
    (
        "Photosynthesis is the process by which green plants, algae and some bacteria turn light "
        "into chemical energy. Using sunlight, they combine carbon dioxide from the air with water "
        "to make sugars, and release oxygen as a by-product. Almost all life on earth depends on "
        "it, directly or indirectly, for food and for the oxygen in the air we breathe."
    ),
    (
        "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the "
        "wick, polished the great lens and watched the beam sweep across the dark water. On "
        "stormy nights he stayed awake until dawn, listening to the wind and the waves, and "
        "wondering how many ships out there were steering by his light."
    ),
    (
        "Interest rates are the price of borrowing money. When a central bank raises its rate, "
        "loans and mortgages become more expensive, people and firms tend to borrow and spend "
        "less, and inflation usually slows. When it cuts the rate, borrowing becomes cheaper, "
        "which can support growth and jobs but may also push prices up over time."
    ),
    (
        "Honeybees live in colonies of tens of thousands of workers, a few hundred drones and a "
        "single queen. Workers forage for nectar and pollen, build wax comb, feed the young and "
        "guard the entrance. A forager that finds a rich patch of flowers returns to the hive and "
        "performs a waggle dance that tells her sisters the direction and distance to the food."
    ),
    (
        "Mount Everest, on the border between Nepal and China, is the highest mountain above sea "
        "level, at about 8,849 metres. It was first climbed in 1953 by Edmund Hillary and Tenzing "
        "Norgay. Today hundreds of climbers attempt it each year, but the thin air, the cold and "
        "sudden storms still make the final ridge one of the most dangerous places on earth."
    ),
)
