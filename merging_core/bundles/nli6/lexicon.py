"""Word lists shared by the nli6 task generators (no randomness, no logic).

Each list is a small hand-written vocabulary; the generators in :mod:`.tasks` combine them with
templates, so a task's examples differ in many slots at once and no single word decides a label.
"""

from __future__ import annotations

NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Irene", "Jonas",
    "Karen", "Liam", "Maya", "Nikolai", "Olivia", "Pedro", "Quinn", "Rosa", "Samuel", "Tara",
    "Umar", "Vera", "Walter", "Xenia", "Yusuf", "Zoe", "Marta", "Oscar", "Priya", "Tomas",
)  # fmt: skip

CITIES = (
    "Lisbon", "Oslo", "Nairobi", "Denver", "Kyoto", "Lima", "Prague", "Dublin", "Cairo",
    "Seoul", "Vienna", "Porto", "Quebec", "Perth", "Bergen", "Madrid", "Boston", "Austin",
    "Manila", "Krakow", "Hamburg", "Tunis", "Santiago", "Glasgow",
)  # fmt: skip

# People: (noun, plural-free hypernym used in entailing hypotheses)
PEOPLE = (
    ("man", "person"), ("woman", "person"), ("boy", "child"), ("girl", "child"),
    ("chef", "cook"), ("doctor", "person"), ("farmer", "worker"), ("musician", "performer"),
    ("student", "young person"), ("tourist", "visitor"), ("police officer", "person"),
    ("nurse", "person"), ("dancer", "performer"), ("athlete", "person"), ("painter", "artist"),
    ("teenager", "young person"), ("fisherman", "worker"), ("grandmother", "woman"),
)  # fmt: skip

AGES = ("young", "old", "middle-aged", "elderly", "little")
MOODS = ("tired", "happy", "professional", "nervous", "famous", "sad", "proud")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "gray")
CLOTHES = ("shirt", "jacket", "hat", "dress", "sweater", "coat", "scarf")

# Object categories: hypernym, members, verbs (present participle) that fit every member.
CATEGORIES = {
    "animal": (
        ("dog", "cat", "horse", "goat", "parrot", "rabbit", "cow", "pony"),
        ("feeding", "walking", "petting", "brushing", "chasing", "photographing"),
    ),
    "instrument": (
        ("guitar", "violin", "piano", "drum", "flute", "trumpet", "cello", "banjo"),
        ("playing", "tuning", "carrying", "repairing", "cleaning"),
    ),
    "vehicle": (
        ("bicycle", "car", "truck", "motorcycle", "boat", "scooter", "tractor"),
        ("riding", "washing", "repairing", "pushing", "painting"),
    ),
    "food": (
        ("apple", "sandwich", "pizza", "cake", "melon", "banana", "pie", "sausage"),
        ("eating", "cutting", "selling", "cooking", "sharing"),
    ),
    "ball": (
        ("soccer ball", "basketball", "tennis ball", "football", "volleyball"),
        ("kicking", "throwing", "catching", "bouncing", "holding"),
    ),
    "tool": (
        ("hammer", "shovel", "ladder", "saw", "rake", "drill"),
        ("holding", "using", "carrying", "cleaning", "buying"),
    ),
}

# Places with whether they are indoors; contradictions swap to a place of the other kind.
PLACES = (
    ("park", False), ("beach", False), ("street", False), ("field", False), ("forest", False),
    ("garden", False), ("riverbank", False), ("kitchen", True), ("garage", True),
    ("living room", True), ("classroom", True), ("gym", True), ("shop", True), ("studio", True),
)  # fmt: skip

# Postures that exclude each other (SNLI-style contradictions).
POSTURES = ("sleeping", "swimming", "sitting alone in a car", "lying in bed", "driving a bus")

# SICK-style verb pairs: (verb, synonym) on a shared object list.
SICK_ACTIONS = (
    ("slicing", "cutting", ("onion", "tomato", "potato", "carrot", "loaf of bread", "lemon")),
    ("playing", "strumming", ("guitar", "banjo", "ukulele", "harp")),
    ("riding", "sitting on", ("horse", "bicycle", "motorbike", "camel", "skateboard")),
    ("peeling", "removing the skin of", ("potato", "orange", "banana", "cucumber", "carrot")),
    ("throwing", "tossing", ("ball", "stick", "frisbee", "stone", "pillow")),
    ("writing", "putting words on", ("letter", "postcard", "note", "card")),
    ("cleaning", "wiping", ("table", "window", "floor", "mirror", "car")),
    ("walking", "strolling with", ("dog", "goat", "pony", "puppy")),
)
SICK_SUBJECTS = (
    ("man", "person"), ("woman", "person"), ("boy", "kid"), ("girl", "kid"),
    ("child", "kid"), ("lady", "person"), ("guy", "person"), ("monkey", "animal"),
    ("chef", "cook"), ("teenager", "young person"), ("old man", "person"),
    ("young woman", "person"),
)  # fmt: skip
# Opposite-state rewrites for SICK contradictions of the subject's state.
SICK_OPPOSITES = (
    ("standing", "sitting"), ("smiling", "frowning"), ("indoors", "outdoors"),
    ("awake", "asleep"), ("laughing", "crying"),
)  # fmt: skip

# Organisations for RTE-style world facts.
ORG_HEADS = (
    "Norvex", "Caldera", "Brightwell", "Halvorsen", "Tessaro", "Quillon", "Marrow", "Ostrava",
    "Veridian", "Kestrel", "Lumina", "Baxley", "Ferrand", "Solvik", "Aurel", "Pinecrest",
)  # fmt: skip
ORG_TAILS = (
    "Systems", "Foods", "Airlines", "Bank", "Motors", "Media", "Pharma", "Energy",
    "Group", "Telecom", "Steel", "Records",
)  # fmt: skip
ORG_KINDS = (
    "software maker", "food company", "carrier", "lender", "carmaker", "broadcaster",
    "drug maker", "utility", "conglomerate", "phone operator", "steel producer", "music label",
)  # fmt: skip
ROLES = ("chief executive", "chairman", "finance director", "head of research", "president")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")

# MNLI genres.
AGENCIES = (
    "ministry", "city council", "statistics office", "health department", "port authority",
    "water board", "transport agency", "census bureau",
)  # fmt: skip
COUNTABLES = (
    ("houses", "built"), ("bridges", "repaired"), ("schools", "opened"), ("trees", "planted"),
    ("permits", "issued"), ("cars", "registered"), ("clinics", "inspected"), ("roads", "paved"),
)  # fmt: skip
PERIODS = ("year", "spring", "summer", "winter", "quarter", "month")
EMOTIONS = (
    ("delighted", "glad", "miserable"), ("furious", "angry", "calm"),
    ("terrified", "afraid", "fearless"), ("exhausted", "tired", "energetic"),
    ("astonished", "surprised", "unsurprised"), ("heartbroken", "sad", "cheerful"),
)  # fmt: skip
EVENTS = (
    "missed the train", "sold the farm", "came home late", "broke the old mirror",
    "forgot the anniversary", "won the lottery", "left without a word", "burned the letters",
)  # fmt: skip
RELATIVES = ("brother", "sister", "mother", "father", "cousin", "uncle", "aunt", "neighbor")
HOBBIES = (
    ("goes fishing", "go fishing"), ("plays golf", "play golf"), ("goes camping", "go camping"),
    ("does the gardening", "do the gardening"), ("goes jogging", "go jogging"),
    ("bakes bread", "bake bread"), ("plays chess", "play chess"), ("goes hunting", "go hunting"),
)  # fmt: skip
FREQUENCIES = ("every weekend", "every morning", "twice a week", "every day", "each summer")
SIGHTS = (
    "museum", "cathedral", "old fortress", "botanical garden", "harbour market",
    "royal palace", "castle", "aquarium",
)  # fmt: skip
SEASONS = ("spring", "summer", "autumn", "winter")

# SciTail: taxonomic classes (plural) with members (plural) and properties every member has.
SCI_CLASSES = {
    "mammals": (
        ("whales", "bats", "dolphins", "horses", "rabbits", "elephants", "mice", "seals"),
        ("feed their young with milk", "have hair or fur", "are warm-blooded"),
    ),
    "birds": (
        ("penguins", "eagles", "ostriches", "sparrows", "owls", "parrots", "swans", "robins"),
        ("have feathers", "lay hard-shelled eggs", "have a beak"),
    ),
    "reptiles": (
        ("snakes", "lizards", "turtles", "crocodiles", "iguanas", "geckos", "tortoises"),
        ("are cold-blooded", "have dry scaly skin", "lay leathery eggs"),
    ),
    "insects": (
        ("bees", "ants", "butterflies", "beetles", "grasshoppers", "moths", "wasps", "flies"),
        ("have six legs", "have three body parts", "have an exoskeleton"),
    ),
    "amphibians": (
        ("frogs", "toads", "salamanders", "newts"),
        ("breathe through their skin", "lay eggs in water", "undergo metamorphosis"),
    ),
    "metals": (
        (
            "copper wires",
            "iron nails",
            "aluminum cans",
            "silver coins",
            "gold rings",
            "zinc plates",
        ),
        ("conduct electricity", "conduct heat well", "can be hammered into sheets"),
    ),
    "gases": (
        ("oxygen samples", "nitrogen samples", "helium samples", "neon samples", "argon samples"),
        ("fill the volume of their container", "can be compressed", "have no fixed shape"),
    ),
    "plants": (
        ("ferns", "oak trees", "mosses", "sunflowers", "cacti", "grasses", "tulips"),
        ("make food by photosynthesis", "release oxygen", "absorb water through roots"),
    ),
}
SCI_CONTEXTS = (
    "In biology class,", "According to the textbook,", "As the teacher explained,",
    "Scientists have shown that", "In a lesson on classification,", "The encyclopedia notes that",
    "", "It is well known that", "A field guide states that",
    "During the museum tour, the guide said",
    "Most students remember that", "The exam question reminded students that",
)  # fmt: skip

# QNLI: events (past, base, participle, objects).
QNLI_EVENTS = (
    ("painted", "paint", "painted", ("portrait", "mural", "fence", "ceiling")),
    ("bought", "buy", "bought", ("house", "boat", "violin", "bakery")),
    ("built", "build", "built", ("bridge", "cabin", "telescope", "greenhouse")),
    ("wrote", "write", "written", ("novel", "symphony", "report", "play")),
    ("sold", "sell", "sold", ("farm", "restaurant", "car", "painting")),
    ("founded", "found", "founded", ("school", "choir", "newspaper", "museum")),
    ("designed", "design", "designed", ("stadium", "library", "garden", "poster")),
)
YEARS = tuple(range(1890, 2021, 7))
