"""Tiny-ImageNet-200 grouped into super-classes, for the GSP paper's collage experiment (TIN-SuperCollage).

The paper's CIFAR-Collage labels an image by one of **16 target super-classes** of CIFAR-100, fills its other
cells with tiles of **4 nuisance super-classes**, trains on the first 3 fine classes of every target super-class
and tests on the other 2 (unseen fine classes, same label space). Tiny-ImageNet has no super-classes, so this
module writes one grouping down, in the spirit of CIFAR-100's 20 (dogs, insects, vehicles, food, clothing, ...).

**How it was made.** By hand, from the ``words`` column of Tiny-ImageNet's ``classes.tsv``, with our own judgement:
WordNet is not installed here and there is no network, so no hypernym tree was consulted. Every class is in exactly
one of three places:

* :data:`TIN_TARGET_SUPERCLASSES` -- 16 super-classes of exactly **5** fine classes each (as in CIFAR-100), each
  chosen to look alike at 32 px (the same kind of object, similar shape or setting). Within a super-class the fine
  classes are in ascending Tiny-ImageNet index and **the first 3 are the training classes, the last 2 the test
  classes** -- a mechanical rule, so the split into seen and unseen classes was not chosen by hand (the paper's
  CIFAR order is alphabetical, equally mechanical). Where a group had more than 5 candidates, the 5 kept are the
  most alike, and a near-twin of a kept class is left out (Labrador retriever beside golden retriever, lemon
  beside orange) so that a test class is never a copy of a training class.
* :data:`TIN_NUISANCE_SUPERCLASSES` -- 4 super-classes (19 classes) that are never labels: their images fill the
  nuisance cells. They are sibling groups of the targets (like CIFAR-100's 20, all at one level), but none holds
  a member or near-twin of a target super-class, so a nuisance cell never shows label content.
* :data:`TIN_UNUSED_CLASSES` -- the other 101 classes, grouped by why they are left out: related to a target
  super-class but beyond its five (as nuisance they would put label-like content in nuisance cells), related to a
  nuisance super-class, a coherent group that would blur a chosen one (bridges and dams, buildings and shops), or
  part of no coherent group of five.

Each member is written ``(index, name)``: the Tiny-ImageNet class index (the row of ``classes.tsv``, the
``label`` id of the parquet splits) and one of its ``words`` synonyms, which the tests check against
``classes.tsv`` so that an index typo cannot go unnoticed.

============================  ===============================================  ===================================
label id, target super-class  train fine classes                               test fine classes
============================  ===============================================  ===================================
0 reptiles and amphibians     European fire salamander, bullfrog, tailed frog  American alligator, boa constrictor
1 non-insect arthropods       scorpion, black widow, tarantula                 centipede, spiny lobster
2 insects                     ladybug, fly, bee                                grasshopper, cockroach
3 dogs                        Chihuahua, Yorkshire terrier, golden retriever   German shepherd, standard poodle
4 cats                        tabby, Persian cat, Egyptian cat                 cougar, lion
5 hoofed mammals              ox, bison, bighorn                               gazelle, Arabian camel
6 cars                        station wagon, convertible, limousine            police van, sports car
7 large vehicles              bullet train, freight car, moving van            school bus, trolleybus
8 robes and coats             academic gown, cardigan, fur coat                kimono, poncho
9 head and face gear          gasmask, neck brace, snorkel                     sombrero, sunglasses
10 sports equipment           basketball, dumbbell, punching bag               rugby ball, volleyball
11 bottles and jugs           beaker, beer bottle, pill bottle                 pop bottle, water jug
12 electronic devices         ATM, CD player, computer keyboard                iPod, remote control
13 towers and monuments       beacon, flagpole, maypole                        obelisk, water tower
14 fruit and vegetables       cauliflower, bell pepper, orange                 banana, pomegranate
15 prepared dishes            guacamole, mashed potato, meat loaf              pizza, potpie
============================  ===============================================  ===================================

Nuisance: birds (goose, black stork, king penguin, albatross), natural landscapes (alp, cliff, coral reef,
lakeside, seashore), furniture and appliances (chest, desk, dining table, refrigerator, rocking chair),
soft-bodied invertebrates (jellyfish, snail, slug, sea slug, sea cucumber).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "TEST_FINE_PER_SUPERCLASS",
    "TIN_NUISANCE_CLASSES",
    "TIN_NUISANCE_SUPERCLASSES",
    "TIN_SUPERCLASS_NAMES",
    "TIN_TARGET_SUPERCLASSES",
    "TIN_TEST_FINE_CLASSES",
    "TIN_TRAIN_FINE_CLASSES",
    "TIN_UNUSED_CLASSES",
    "TRAIN_FINE_PER_SUPERCLASS",
    "TinSuperClass",
]

TRAIN_FINE_PER_SUPERCLASS = 3  # the first 3 fine classes of a target super-class are trained on
TEST_FINE_PER_SUPERCLASS = 2  # the other 2 are the unseen test classes


@dataclass(frozen=True)
class TinSuperClass:
    """A named group of Tiny-ImageNet classes: ``members`` are ``(class index, Tiny-ImageNet name)``, ascending."""

    name: str
    members: tuple[tuple[int, str], ...]
    reason: str  # why these classes belong together

    @property
    def classes(self) -> tuple[int, ...]:
        """The members' Tiny-ImageNet class indices, ascending."""
        return tuple(index for index, _ in self.members)

    @property
    def train_classes(self) -> tuple[int, ...]:
        """The fine classes trained on (the first :data:`TRAIN_FINE_PER_SUPERCLASS`)."""
        return self.classes[:TRAIN_FINE_PER_SUPERCLASS]

    @property
    def test_classes(self) -> tuple[int, ...]:
        """The unseen fine classes tested on (the next :data:`TEST_FINE_PER_SUPERCLASS`)."""
        return self.classes[TRAIN_FINE_PER_SUPERCLASS : TRAIN_FINE_PER_SUPERCLASS + TEST_FINE_PER_SUPERCLASS]


# Label id = position in this tuple.
TIN_TARGET_SUPERCLASSES: tuple[TinSuperClass, ...] = (
    TinSuperClass("reptiles and amphibians", (
        (1, "European fire salamander"), (2, "bullfrog"), (3, "tailed frog"), (4, "American alligator"),
        (5, "boa constrictor"),
    ), "cold-blooded four-legged or legless vertebrates on ground or in water; CIFAR-100 has 'reptiles'"),
    TinSuperClass("non-insect arthropods", (
        (7, "scorpion"), (8, "black widow"), (9, "tarantula"), (10, "centipede"),
        (19, "spiny lobster"),
    ), "many-legged jointed creatures, live (the American lobster, often cooked on a plate, and the fossil "
       "trilobite are left out); CIFAR-100's 'non-insect invertebrates'"),
    TinSuperClass("insects", (
        (36, "ladybug"), (37, "fly"), (38, "bee"), (39, "grasshopper"), (41, "cockroach"),
    ), "small six-legged insects in close-up; the large-winged butterflies and dragonfly and the camouflaged "
       "walking stick and mantis are left out; CIFAR-100's 'insects'"),
    TinSuperClass("dogs", (
        (24, "Chihuahua"), (25, "Yorkshire terrier"), (26, "golden retriever"), (28, "German shepherd"),
        (29, "standard poodle"),
    ), "dog breeds; the Labrador retriever is left out as a near-twin of the golden retriever"),
    TinSuperClass("cats", (
        (30, "tabby"), (31, "Persian cat"), (32, "Egyptian cat"), (33, "cougar"), (34, "lion"),
    ), "felids, domestic and wild: the same face and body plan; train domestic, test wild (as CIFAR-100's "
       "'large carnivores' test unseen species)"),
    TinSuperClass("hoofed mammals", (
        (49, "ox"), (50, "bison"), (51, "bighorn"), (52, "gazelle"), (53, "Arabian camel"),
    ), "large grazing ungulates in open country; the hog (short legs, farmyard) is left out"),
    TinSuperClass("cars", (
        (70, "station wagon"), (94, "convertible"), (116, "limousine"), (133, "police van"), (153, "sports car"),
    ), "passenger cars and a car-sized van seen from the side or front on a road"),
    TinSuperClass("large vehicles", (
        (81, "bullet train"), (103, "freight car"), (121, "moving van"), (145, "school bus"), (166, "trolleybus"),
    ), "long boxy road and rail vehicles; CIFAR-100's 'vehicles 1' (bus, train, pickup truck)"),
    TinSuperClass("robes and coats", (
        (60, "academic gown"), (85, "cardigan"), (105, "fur coat"), (112, "kimono"), (134, "poncho"),
    ), "garments covering the upper body and arms, usually worn by a standing person"),
    TinSuperClass("head and face gear", (
        (106, "gasmask"), (123, "neck brace"), (148, "snorkel"), (150, "sombrero"), (156, "sunglasses"),
    ), "things worn on the head, face or neck: a head and shoulders with an object on them"),
    TinSuperClass("sports equipment", (
        (68, "basketball"), (100, "dumbbell"), (138, "punching bag"), (143, "rugby ball"), (171, "volleyball"),
    ), "balls and training gear, often in a gym or on a court"),
    TinSuperClass("bottles and jugs", (
        (72, "beaker"), (73, "beer bottle"), (130, "pill bottle"), (135, "pop bottle"), (172, "water jug"),
    ), "upright glass or plastic vessels for liquids; CIFAR-100's 'food containers' (bottles, cups, cans)"),
    TinSuperClass("electronic devices", (
        (86, "ATM"), (87, "CD player"), (92, "computer keyboard"), (110, "iPod"), (141, "remote control"),
    ), "boxes with buttons, keys or screens; CIFAR-100's 'household electrical devices'"),
    TinSuperClass("towers and monuments", (
        (71, "beacon"), (101, "flagpole"), (118, "maypole"), (124, "obelisk"), (173, "water tower"),
    ), "tall thin vertical structures against the sky"),
    TinSuperClass("fruit and vegetables", (
        (183, "cauliflower"), (184, "bell pepper"), (186, "orange"), (188, "banana"), (189, "pomegranate"),
    ), "whole produce in close-up; the lemon is left out as a near-twin of the orange; CIFAR-100's 'fruit and "
       "vegetables'"),
    TinSuperClass("prepared dishes", (
        (178, "guacamole"), (182, "mashed potato"), (190, "meat loaf"), (191, "pizza"), (192, "potpie"),
    ), "cooked food served on a plate or in a dish, seen from above"),
)

TIN_NUISANCE_SUPERCLASSES: tuple[TinSuperClass, ...] = (
    TinSuperClass("birds", (
        (11, "goose"), (20, "black stork"), (21, "king penguin"), (22, "albatross"),
    ), "birds: no target super-class holds an animal that flies or swims like them"),
    TinSuperClass("natural landscapes", (
        (194, "alp"), (195, "cliff"), (196, "coral reef"), (197, "lakeside"), (198, "seashore"),
    ), "scenery without a central object, the natural clutter of a nuisance cell; CIFAR-100's 'large natural "
       "outdoor scenes'"),
    TinSuperClass("furniture and appliances", (
        (89, "chest"), (97, "desk"), (98, "dining table"), (140, "refrigerator"), (142, "rocking chair"),
    ), "large indoor household objects; CIFAR-100's 'household furniture'"),
    TinSuperClass("soft-bodied invertebrates", (
        (13, "jellyfish"), (15, "snail"), (16, "slug"), (17, "sea slug"), (46, "sea cucumber"),
    ), "molluscs, a cnidarian and an echinoderm: soft, legless, often wet; unlike the jointed arthropods and "
       "insects of the targets"),
)

TIN_UNUSED_CLASSES: dict[str, tuple[int, ...]] = {
    "related to a target super-class but not among its five (as nuisance they would show label-like content)": (
        6, 18, 152,  # trilobite, American lobster, spider web: arthropods
        40, 42, 43, 44, 45,  # walking stick, mantis, dragonfly, monarch, sulphur butterfly: insects
        27,  # Labrador retriever: near-twin of the golden retriever
        12, 35, 47, 48, 54, 55, 56, 57, 58,  # koala, brown bear, guinea pig, hog, orangutan, chimpanzee, baboon,
        # African elephant, lesser panda: mammals, like the dogs, cats and hoofed mammals
        107, 108, 111, 114, 115, 164,  # go-kart, gondola, jinrikisha, lawn mower, lifeboat, tractor: vehicles
        62, 74, 77, 90, 119, 120, 144, 149, 158, 169,  # apron, bikini, bow tie, Christmas stocking, military
        # uniform, miniskirt, sandal, sock, swimming trunks, vestment: clothing
        127, 128, 146,  # parking meter, pay-phone, scoreboard: devices with buttons or displays
        132,  # pole: a tall thin structure
        67, 80, 104, 160, 174, 175, 177,  # barrel, bucket, frying pan, teapot, wok, wooden spoon, plate: vessels
        179, 180, 181, 185, 187, 193, 199,  # ice cream, ice lolly, pretzel, mushroom, lemon, espresso, acorn: food
    ),
    "related to a nuisance super-class but not in it": (
        14,  # brain coral: a texture close to the coral reef and the sea cucumber
        23,  # dugong: a sea animal
        69, 113, 147, 151,  # bathtub, lampshade, sewing machine, space heater: household objects
    ),
    "a coherent group left out because it would blur a chosen one": (
        96, 154, 157, 165, 170,  # dam, steel arch bridge, suspension bridge, triumphal arch, viaduct: large
        # structures, close to the towers and monuments and, crossing valleys and water, to the landscapes
        65, 66, 82, 91, 93, 162,  # barbershop, barn, butcher shop, cliff dwelling, confectionery, thatch: buildings
        # and shops, close to the towers; the butcher shop and the confectionery show food
    ),
    "part of no coherent group of five": (
        0, 59, 61, 63, 64, 75, 76, 78, 79, 83, 84, 88, 95, 99, 102, 109, 117, 122, 125, 126, 129, 131, 136, 137,
        139, 155, 159, 161, 163, 167, 168, 176,  # goldfish, abacus, altar, backpack, ..., umbrella, comic book
    ),
}


def _classes_of(superclasses: tuple[TinSuperClass, ...], part: str) -> tuple[int, ...]:
    return tuple(index for superclass in superclasses for index in getattr(superclass, part))


TIN_SUPERCLASS_NAMES: tuple[str, ...] = tuple(superclass.name for superclass in TIN_TARGET_SUPERCLASSES)
TIN_TRAIN_FINE_CLASSES: tuple[int, ...] = _classes_of(TIN_TARGET_SUPERCLASSES, "train_classes")  # 48, by label
TIN_TEST_FINE_CLASSES: tuple[int, ...] = _classes_of(TIN_TARGET_SUPERCLASSES, "test_classes")  # 32, by label
TIN_NUISANCE_CLASSES: tuple[int, ...] = _classes_of(TIN_NUISANCE_SUPERCLASSES, "classes")  # 19
