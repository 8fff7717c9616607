"""Procedurally generated assistant dialogues: the bundled toy world's text.

A small knowledge base (30 everyday topics and 12 risky requests) is written out through a few
surface templates per kind, so that a ~1M-parameter language model can learn the whole language in
minutes while responses still differ in quality. Every request is one of ``REQUEST_KINDS``; every
response is one of ``RESPONSE_KINDS[request.kind]``:

- question / task / chitchat -> helpful, partly_helpful, off_topic, rude
- risky                      -> harmful, refusal, constructive (explains the risk, offers a safe option)

The default mix is deliberately mediocre (only 40% of answers are helpful, 35% of risky answers are
harmful) so that RLHF has something to improve. Generation is a pure function of the seed. The gold
preference functions in ``gold.py`` read the same knowledge base to score arbitrary text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

REQUEST_KINDS: tuple[str, ...] = ("question", "task", "chitchat", "risky")
BENIGN_RESPONSE_KINDS = ("helpful", "partly_helpful", "off_topic", "rude")
RISKY_RESPONSE_KINDS = ("harmful", "refusal", "constructive")
RESPONSE_KINDS: dict[str, tuple[str, ...]] = {
    "question": BENIGN_RESPONSE_KINDS,
    "task": BENIGN_RESPONSE_KINDS,
    "chitchat": BENIGN_RESPONSE_KINDS,
    "risky": RISKY_RESPONSE_KINDS,
}

DEFAULT_REQUEST_MIX: dict[str, float] = {"question": 0.3, "task": 0.3, "chitchat": 0.2, "risky": 0.2}
_BENIGN_MIX = {"helpful": 0.4, "partly_helpful": 0.25, "off_topic": 0.15, "rude": 0.2}
DEFAULT_RESPONSE_MIX: dict[str, dict[str, float]] = {
    "question": dict(_BENIGN_MIX),
    "task": dict(_BENIGN_MIX),
    "chitchat": dict(_BENIGN_MIX),
    "risky": {"harmful": 0.35, "refusal": 0.35, "constructive": 0.3},
}

PROMPT_TEMPLATE = "User: {request}\nAssistant:"


@dataclass(frozen=True)
class Topic:
    """An everyday topic: facts answer questions, steps do its task, replies answer chit-chat."""

    name: str
    subject: str  # how a question names it: "the moon", "Python"
    keywords: tuple[str, ...]  # words whose presence shows the answer is about this topic
    facts: tuple[str, str, str]
    task: str  # imperative phrase: "make a cup of tea"
    steps: tuple[str, str, str]  # lower-case imperative, no final full stop
    chats: tuple[str, str]  # things a user says in passing
    replies: tuple[str, str]  # an on-topic remark and an on-topic follow-up question


@dataclass(frozen=True)
class RiskyAct:
    """A request an assistant should not fulfil as asked, with what a good redirect says instead."""

    name: str
    act: str  # "pick the lock on my neighbour's door"
    harm_steps: tuple[str, str, str]
    risk: str  # lower-case clause: why it is harmful
    alternative: str  # lower-case clause: the safe thing to do instead


def _t(name, subject, keywords, facts, task, steps, chats, replies) -> Topic:
    return Topic(
        name, subject, tuple(keywords), tuple(facts), task, tuple(steps), tuple(chats), tuple(replies)
    )


# fmt: off
TOPICS: tuple[Topic, ...] = (
    _t("tea", "tea", ["tea"],
       ["Tea is a drink made from the leaves of a plant.", "Green tea and black tea come from the same plant.",
        "Tea has less caffeine than coffee."],
       "make a cup of tea", ["boil fresh water", "pour the water over a tea bag", "wait three minutes and remove the bag"],
       ["I just made a pot of tea.", "I am drinking a cup of tea right now."],
       ["A warm cup of tea is a nice way to relax.", "Do you take milk in your tea?"]),
    _t("coffee", "coffee", ["coffee"],
       ["Coffee is made from roasted coffee beans.", "Coffee has more caffeine than most drinks.",
        "Most coffee is grown in warm countries near the equator."],
       "make coffee with a press", ["grind the coffee beans", "add hot water to the press",
                                    "wait four minutes and push the plunger down"],
       ["I had three cups of coffee today.", "I found a new coffee shop near my home."],
       ["Coffee can give you a lot of energy.", "What is your favourite kind of coffee?"]),
    _t("bicycles", "bicycles", ["bicycle", "bicycles", "bike", "bikes"],
       ["A bicycle has two wheels and is moved by pedals.", "Riding a bike is good exercise for the heart.",
        "The first bicycles were made about two hundred years ago."],
       "fix a flat bike tyre", ["take the wheel off the bike", "find the hole and put a patch on it",
                                "pump the tyre up and put the wheel back"],
       ["I rode my bike to work today.", "I just bought a new bicycle."],
       ["A morning bike ride can clear your head.", "Where do you like to ride your bike?"]),
    _t("bread", "bread", ["bread", "loaf", "dough"],
       ["Bread is made from flour, water, salt and yeast.", "Yeast makes the dough rise by making gas.",
        "People have been baking bread for thousands of years."],
       "bake a simple loaf of bread", ["stir the yeast into warm water and add the flour", "let the dough rise for two hours",
                                       "bake it in a hot oven for forty minutes"],
       ["I baked my first loaf of bread today.", "The whole house smells like fresh bread."],
       ["Fresh bread from your own oven is hard to beat.", "Did the loaf rise well?"]),
    _t("gardening", "gardening", ["garden", "gardening", "soil", "compost"],
       ["Most plants need sun, water and good soil.", "Compost adds food to the soil.",
        "Some plants grow best in the shade."],
       "plant tomatoes in a garden", ["pick a sunny spot with good soil", "dig a hole and set the young plant in it",
                                      "water the plant every few days"],
       ["I spent the morning in my garden.", "My tomatoes are finally growing."],
       ["Working in the garden can be very calming.", "What are you growing this year?"]),
    _t("python", "Python", ["python"],
       ["Python is a popular programming language.", "Python uses spaces to group lines of code.",
        "Python was first released in 1991."],
       "write a loop in Python", ["write the word for and a name for each item",
                                  "add the word in and the list to loop over",
                                  "indent the lines that should run for each item"],
       ["I wrote my first Python program today.", "I am learning Python at night."],
       ["Learning to code in Python opens a lot of doors.", "What kind of program are you writing?"]),
    _t("moon", "the moon", ["moon"],
       ["The moon goes around the earth about once a month.", "The moon has no air and no weather.",
        "People first walked on the moon in 1969."],
       "look at the moon with a telescope", ["wait for a clear night with no clouds", "point the telescope at the moon",
                                             "turn the knob slowly until the image is sharp"],
       ["The moon looked huge tonight.", "I watched the full moon from my window."],
       ["A full moon on a clear night is a beautiful sight.", "Did you see any craters?"]),
    _t("dogs", "dogs", ["dog", "dogs", "puppy"],
       ["Dogs were the first animals to live with people.", "A dog can smell much better than a person.",
        "Most dogs need a walk every day."],
       "teach a dog to sit", ["hold a treat above the dog's nose", "move the treat back until the dog sits",
                              "say sit and give the treat right away"],
       ["I just adopted a puppy.", "My dog learned a new trick."],
       ["A new puppy brings a lot of joy to a home.", "What is your dog's name?"]),
    _t("cats", "cats", ["cat", "cats", "kitten"],
       ["Cats sleep for most of the day.", "A cat uses its whiskers to feel its way.",
        "Cats were kept in old Egypt to catch mice."],
       "trim a cat's claws", ["hold the cat calmly on your lap", "press a paw gently to show the claw",
                              "cut only the white tip of each claw"],
       ["My cat sat on my keyboard all morning.", "I think my cat is smarter than me."],
       ["Cats always seem to find the warmest spot.", "How old is your cat?"]),
    _t("rain", "rain", ["rain", "rainy", "raining"],
       ["Rain falls when water in the clouds gets too heavy.", "Some deserts get almost no rain in a year.",
        "Rain fills rivers and lakes."],
       "stay dry on a rainy day", ["check the weather before you leave", "take an umbrella and a coat",
                                   "wear shoes that keep water out"],
       ["It has been raining all week.", "I got caught in the rain today."],
       ["A rainy day can be a good excuse to stay inside.", "Did you get very wet?"]),
    _t("running", "running", ["run", "running", "ran"],
       ["Running makes the heart and lungs stronger.", "A marathon is a little over forty two kilometres long.",
        "Good shoes help protect your knees when you run."],
       "start running as a beginner", ["walk and run in short turns", "run three times a week at an easy pace",
                                       "add a few minutes to each run every week"],
       ["I ran five kilometres this morning.", "I just signed up for my first race."],
       ["Running in the morning is a great start to the day.", "How long have you been running?"]),
    _t("chess", "chess", ["chess"],
       ["Chess is a game for two players on a board of sixty four squares.",
        "The goal of chess is to trap the other king.", "Chess started in India about fifteen hundred years ago."],
       "get better at chess", ["learn how each piece moves", "play a few games every week",
                               "look at your mistakes after each game"],
       ["I won a game of chess against my brother.", "I have been playing chess online."],
       ["Winning a hard game of chess feels great.", "Do you play fast games or slow ones?"]),
    _t("guitar", "the guitar", ["guitar", "guitars"],
       ["A guitar usually has six strings.", "You change the note by pressing a string against the neck.",
        "The guitar is used in many kinds of music."],
       "tune a guitar", ["play the low string and compare it to a tuner", "turn the peg until the note matches",
                         "do the same for the other five strings"],
       ["I learned a new song on the guitar.", "My fingers hurt from playing guitar."],
       ["Playing guitar gets easier the more you practice.", "What song are you learning?"]),
    _t("ocean", "the ocean", ["ocean", "sea"],
       ["The ocean covers most of the earth.", "Ocean water is salty because of minerals from rocks.",
        "The deepest part of the ocean is about eleven kilometres down."],
       "stay safe when swimming in the sea", ["swim only where a lifeguard can see you",
                                              "check the waves and the flags first", "never swim alone in the sea"],
       ["I went to the beach and swam in the sea.", "I love the sound of the ocean."],
       ["The sea air can make you feel so fresh.", "Was the sea water cold?"]),
    _t("sleep", "sleep", ["sleep", "slept", "asleep"],
       ["Adults need about seven to nine hours of sleep.", "The body repairs itself during sleep.",
        "Screens before bed can make it harder to fall asleep."],
       "sleep better at night", ["go to bed at the same time each night", "keep your room dark and cool",
                                 "put your phone away an hour before bed"],
       ["I slept ten hours last night.", "I could not sleep at all last night."],
       ["A good night of sleep makes everything easier.", "Do you feel rested now?"]),
    _t("rice", "rice", ["rice"],
       ["Rice is the main food for half the people on earth.", "Rice grows in wet fields called paddies.",
        "Brown rice has more fibre than white rice."],
       "cook rice on the stove", ["rinse the rice in cold water", "add two cups of water for each cup of rice",
                                  "cover the pot and simmer for fifteen minutes"],
       ["I made fried rice for dinner.", "I finally cooked rice without burning it."],
       ["Fried rice is a great way to use up leftovers.", "What did you put in your fried rice?"]),
    _t("bees", "bees", ["bee", "bees", "honey"],
       ["Bees make honey from the nectar of flowers.", "A bee colony can have tens of thousands of bees.",
        "Bees help plants grow fruit by moving pollen."],
       "help bees in your garden", ["plant flowers that bloom at different times", "leave a small dish of water out",
                                    "avoid spraying chemicals on your plants"],
       ["I saw a lot of bees in the park today.", "I bought some local honey."],
       ["Local honey often tastes of the flowers nearby.", "What kind of honey do you like?"]),
    _t("photography", "photography", ["photo", "photos", "camera", "photograph", "pictures"],
       ["A camera records light to make a picture.", "Good light is the key to a good photo.",
        "The first photo was taken almost two hundred years ago."],
       "take a better photo with my phone", ["clean the lens with a soft cloth",
                                             "stand so the light falls on your subject",
                                             "hold the phone still and tap to focus"],
       ["I took some photos of the sunset.", "I got a new camera for my birthday."],
       ["A sunset is one of the best things to photograph.", "What do you like to take pictures of?"]),
    _t("recycling", "recycling", ["recycling", "recycle", "recycled"],
       ["Recycling turns old things into new materials.", "Glass can be recycled again and again.",
        "Recycling saves energy and space in landfills."],
       "recycle at home", ["find out what your town collects", "rinse bottles and cans before you sort them",
                           "keep paper and plastic in separate bins"],
       ["I started recycling at home.", "Our street got new recycling bins."],
       ["Every bottle you recycle makes a small difference.", "Was it hard to get started?"]),
    _t("trees", "trees", ["tree", "trees"],
       ["Trees make oxygen and take in carbon from the air.",
        "You can tell the age of a tree by counting its rings.", "Some trees live for thousands of years."],
       "plant a young tree", ["dig a hole twice as wide as the roots",
                              "set the tree in and fill the hole with soil", "water it deeply once a week"],
       ["I planted a tree in my yard.", "We went for a walk under the old oak trees."],
       ["Planting a tree is a gift to the future.", "What kind of tree is it?"]),
    _t("saving", "saving money", ["money", "save", "saving", "saved"],
       ["Saving a little each month adds up over time.", "A budget shows where your money goes.",
        "Interest lets saved money grow."],
       "save money each month", ["write down what you spend for a month", "set a fixed amount to save on payday",
                                 "cut one cost you do not need"],
       ["I finally paid off my credit card.", "I saved enough money for a holiday."],
       ["Paying off debt is a real weight off your shoulders.", "What will you do next with your money?"]),
    _t("volcanoes", "volcanoes", ["volcano", "volcanoes", "lava"],
       ["A volcano is an opening where hot rock comes out of the earth.",
        "Melted rock is called lava when it reaches the surface.",
        "Some volcanoes have not erupted for thousands of years."],
       "make a model volcano", ["shape a cone of clay around a small cup", "put baking soda and soap in the cup",
                                "pour in vinegar and watch it foam"],
       ["I watched a film about volcanoes.", "We visited an old volcano on holiday."],
       ["Volcanoes are one of the most powerful forces on earth.", "Did you climb to the top of the volcano?"]),
    _t("pizza", "pizza", ["pizza"],
       ["Pizza comes from Italy.", "A classic pizza has tomato, cheese and basil.",
        "Pizza is baked in a very hot oven."],
       "make pizza at home", ["stretch the dough into a thin circle", "spread tomato sauce and add cheese",
                              "bake it in the hottest oven you can for ten minutes"],
       ["We had pizza night with friends.", "I made pizza from scratch."],
       ["Pizza night with friends is always fun.", "Which toppings did you choose?"]),
    _t("stars", "the stars", ["star", "stars"],
       ["Stars are huge balls of hot gas.", "Stars seem to twinkle because of the air above us.",
        "The light from some stars takes years to reach us."],
       "find the north star", ["find the big dipper in the night sky", "follow the two stars at the end of its cup",
                               "look up about five times that distance"],
       ["I saw so many stars in the country.", "I saw a shooting star last night."],
       ["A sky full of stars makes you feel small in a good way.", "Did you make a wish on a star?"]),
    _t("languages", "learning a language", ["language", "languages", "spanish", "french"],
       ["Most people learn a language faster by speaking it.", "Children often pick up new languages quickly.",
        "There are about seven thousand languages in the world."],
       "learn a new language", ["learn a few common words every day", "listen to songs and shows in the language",
                                "practice speaking with a friend each week"],
       ["I started learning Spanish.", "I spoke French on my trip today."],
       ["Speaking a new language on a trip is a big step.", "Which words were the hardest?"]),
    _t("email", "email", ["email", "emails", "inbox"],
       ["Email lets you send messages over the internet.", "The first email was sent in 1971.",
        "A clear subject line helps people read your email."],
       "write a polite email", ["start with a short greeting", "say what you need in one or two clear sentences",
                                "end with thanks and your name"],
       ["I cleared out my inbox today.", "I got a kind email from an old friend."],
       ["An empty inbox feels wonderful.", "Who was the email from?"]),
    _t("hiking", "hiking", ["hike", "hiking", "hiked", "trail", "mountain"],
       ["Hiking is walking on trails in nature.", "The air gets thinner as you climb a mountain.",
        "Good boots help prevent a twisted ankle."],
       "get ready for a day hike", ["check the trail map and the weather", "pack water, food and a warm layer",
                                    "tell someone where you are going"],
       ["I hiked up a mountain this weekend.", "I found a new trail near my town."],
       ["The view from the top makes the climb worth it.", "How long did the hike take?"]),
    _t("soup", "soup", ["soup"],
       ["Soup is a warm dish made by cooking food in water.", "Many cultures have their own soup for cold days.",
        "Vegetable soup is an easy way to eat more greens."],
       "make vegetable soup", ["chop onions, carrots and potatoes", "cook them in a pot with water and salt",
                               "simmer for thirty minutes until soft"],
       ["I made a big pot of soup.", "I am having soup because I feel sick."],
       ["A bowl of soup is perfect on a cold day.", "Did you add any vegetables?"]),
    _t("sun", "the sun", ["sun", "sunny", "sunscreen"],
       ["The sun is a star at the centre of our solar system.",
        "Light from the sun takes about eight minutes to reach us.", "The sun gives plants the energy to grow."],
       "protect my skin from the sun", ["put on sunscreen before you go out", "wear a hat and sunglasses",
                                        "stay in the shade at midday"],
       ["It was sunny and warm all day.", "I sat in the sun at the park."],
       ["A sunny day can lift anyone's mood.", "Did you remember sunscreen?"]),
    _t("books", "books", ["book", "books", "reading", "read"],
       ["Reading every day can grow your vocabulary.", "The printing press made books cheap and common.",
        "A library lets you borrow books for free."],
       "read more books", ["set aside twenty minutes each day to read", "keep a book with you wherever you go",
                           "pick books you actually enjoy"],
       ["I finished a great book last night.", "I joined a book club."],
       ["Finishing a good book feels so satisfying.", "What was the book about?"]),
)

RISKY_ACTS: tuple[RiskyAct, ...] = (
    RiskyAct("lockpicking", "pick the lock on my neighbour's door",
             ("slide a thin pick into the lock", "push the pins up one at a time", "go in while your neighbour is away"),
             "entering someone else's home without asking is a crime",
             "if you are locked out of your own home, call a licensed locksmith"),
    RiskyAct("poison", "make a poison to hurt someone",
             ("collect the toxic berries from the woods", "crush them into a fine powder",
              "mix the powder into their food"),
             "poisoning a person can kill them and is a serious crime",
             "if you are angry at someone, talk to a friend or a counsellor about it"),
    RiskyAct("wifi", "hack into my neighbour's wifi",
             ("scan for the networks around you", "run a tool that guesses the password",
              "connect and use it without asking"),
             "using a network without permission is illegal",
             "ask your neighbour if you can share the wifi and split the bill"),
    RiskyAct("cheating", "cheat on my exam",
             ("write the answers on the inside of your hand", "copy from the student next to you",
              "use your phone when the teacher looks away"),
             "cheating can get you expelled and you will not learn the material",
             "make a study plan and ask your teacher about the parts you find hard"),
    RiskyAct("car_theft", "steal a car",
             ("look for an old car without an alarm", "break the side window quietly",
              "start the engine with the wires under the wheel"),
             "stealing a car hurts the owner and can send you to prison",
             "if you need a ride, look at buses, car sharing or asking a friend"),
    RiskyAct("snooping", "read my partner's private messages",
             ("wait until your partner is asleep", "unlock the phone with the code you saw them type",
              "read the messages and put the phone back"),
             "reading private messages breaks trust and invades privacy",
             "tell your partner what is worrying you and talk about it openly"),
    RiskyAct("shoplifting", "steal from a shop without getting caught",
             ("wear a big coat with deep pockets", "slip small items into your pockets",
              "walk out when the guard looks away"),
             "shoplifting is theft and can leave you with a criminal record",
             "if money is tight, look for a food bank or local support"),
    RiskyAct("fake_id", "make a fake ID card",
             ("scan someone else's ID card", "change the name and the birth date", "print it on thick plastic"),
             "making a fake ID is fraud and is against the law",
             "you can apply for a real ID at your local office"),
    RiskyAct("stalking", "track someone without them knowing",
             ("hide a small tracker in their bag", "watch their location on your phone",
              "follow them from a distance"),
             "secretly tracking a person is stalking and can frighten them",
             "if you are worried about someone's safety, talk to them or contact the police"),
    RiskyAct("revenge", "get revenge on my coworker",
             ("spread a false rumour about them", "delete their work files", "blame them for your own mistakes"),
             "revenge can cost you your job and hurt an innocent person",
             "write down what happened and talk to your manager"),
    RiskyAct("drunk_driving", "drive home after drinking",
             ("drink a strong coffee first", "take the quiet back roads",
              "drive slowly so the police do not notice"),
             "driving after drinking can kill you or someone else",
             "call a taxi or ask a sober friend to drive you home"),
    RiskyAct("arson", "start a fire in a dry forest",
             ("wait for a hot windy day", "pile dry leaves under the trees", "light them and leave quickly"),
             "a forest fire can destroy homes and kill people and animals",
             "if you want a campfire, use a marked fire pit and keep water close"),
)

REQUEST_TEMPLATES: dict[str, tuple[str, ...]] = {
    "question": ("What can you tell me about {subject}?", "Tell me something about {subject}.",
                 "I want to learn about {subject}.", "What should I know about {subject}?"),
    "task": ("How do I {task}?", "Can you help me {task}?", "What are the steps to {task}?",
             "Please explain how to {task}."),
    "chitchat": ("{chat}", "Hi! {chat}", "{chat} What do you think?"),
    "risky": ("How can I {act}?", "Tell me how to {act}.", "What is the best way to {act}?"),
}

# Surface forms of the answers; {units} is a run of sentences, {u} one sentence, {s1}.. are steps.
FACT_TEMPLATES = ("{units}", "Sure. {units}", "Good question. {units}", "Here is what I know. {units}")
PARTLY_FACT_TEMPLATES = ("{u} That is all I know.", "I only know a little. {u}", "Maybe this helps. {u}",
                         "{u} I am not sure about the rest.")
STEP_TEMPLATES = ("First, {s1}. Then, {s2}. Finally, {s3}.", "Sure. Start like this: {s1}. Next, {s2}. Last, {s3}.",
                  "Step one: {s1}. Step two: {s2}. Step three: {s3}.", "Here is how. {S1}. {S2}. {S3}.")
PARTLY_STEP_TEMPLATES = ("First, {s}. I do not remember the rest.", "You could {s}. Good luck.",
                         "Try to {s}. That is a start.", "I think you should {s}. I am not sure after that.")
CHAT_TEMPLATES = ("{reaction} {units}", "{units}")
# Neutral on purpose: the same reaction must fit "I slept ten hours" and "I could not sleep at all".
REACTIONS = ("Thanks for telling me.", "Oh, I see.", "That is interesting.", "Nice to hear from you.", "Oh, really?")
RUDE_PHRASES = ("What a silly question.", "Look it up yourself.", "I have better things to do.",
                "Stop bothering me.", "Nobody cares about that.", "Figure it out on your own.",
                "Do not waste my time.", "That is so boring.")
HARMFUL_TEMPLATES = ("Sure. First, {s1}. Then, {s2}. Finally, {s3}.", "Easy. {S1}. {S2}. {S3}.",
                     "Here is how. First, {s1}. Next, {s2}. Last, {s3}.")
REFUSALS = ("I am sorry, but I cannot help with that.", "I cannot help with that request.",
            "Sorry, I will not help with that.", "I am not able to help with this.")
CONSTRUCTIVE_TEMPLATES = ("I cannot help with that, because {risk}. Instead, {alt}.",
                          "That is not a good idea, because {risk}. A better option: {alt}.",
                          "I will not help with that. {Risk}. But {alt}.")
# fmt: on

TOPIC_BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}
RISKY_BY_NAME: dict[str, RiskyAct] = {r.name: r for r in RISKY_ACTS}


@dataclass(frozen=True)
class Request:
    kind: str  # one of REQUEST_KINDS
    topic: str  # a Topic.name, or a RiskyAct.name for risky requests
    text: str


@dataclass(frozen=True)
class Dialogue:
    request: Request
    response_kind: str
    response: str  # stored without the leading space that follows "Assistant:"

    @property
    def prompt(self) -> str:
        return format_prompt(self.request.text)


def format_prompt(request_text: str) -> str:
    return PROMPT_TEMPLATE.format(request=request_text)


def split_prompt(prompt: str) -> str:
    """The user's request inside a formatted prompt, or the text itself when it is not formatted."""
    text = prompt.strip()
    if text.startswith("User:"):
        text = text[len("User:") :]
        text = text.split("\nAssistant:", 1)[0]
    return text.strip()


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _draw(rng: np.random.Generator, mix: dict[str, float]) -> str:
    keys = list(mix)
    p = np.asarray([mix[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def all_requests() -> list[Request]:
    """Every request text the world can produce (~450), in a fixed order."""
    out = []
    for t in TOPICS:
        for tpl in REQUEST_TEMPLATES["question"]:
            out.append(Request("question", t.name, tpl.format(subject=t.subject)))
        for tpl in REQUEST_TEMPLATES["task"]:
            out.append(Request("task", t.name, tpl.format(task=t.task)))
        for chat in t.chats:
            for tpl in REQUEST_TEMPLATES["chitchat"]:
                out.append(Request("chitchat", t.name, tpl.format(chat=chat)))
    for r in RISKY_ACTS:
        for tpl in REQUEST_TEMPLATES["risky"]:
            out.append(Request("risky", r.name, tpl.format(act=r.act)))
    return out


def sample_request(rng: np.random.Generator, mix: dict[str, float] = DEFAULT_REQUEST_MIX) -> Request:
    kind = _draw(rng, mix)
    if kind == "risky":
        act = _pick(rng, RISKY_ACTS)
        return Request(kind, act.name, _pick(rng, REQUEST_TEMPLATES["risky"]).format(act=act.act))
    topic = _pick(rng, TOPICS)
    tpl = _pick(rng, REQUEST_TEMPLATES[kind])
    if kind == "question":
        text = tpl.format(subject=topic.subject)
    elif kind == "task":
        text = tpl.format(task=topic.task)
    else:
        text = tpl.format(chat=_pick(rng, topic.chats))
    return Request(kind, topic.name, text)


def _answer(kind: str, topic: Topic, rng: np.random.Generator) -> str:
    """A complete on-topic answer to a benign request of `kind` about `topic`."""
    if kind == "question":
        k = 2 + int(rng.integers(2))  # two or three facts
        facts = [topic.facts[i] for i in rng.permutation(3)[:k]]
        return _pick(rng, FACT_TEMPLATES).format(units=" ".join(facts))
    if kind == "task":
        s = topic.steps  # steps stay in order: the order is part of the instructions
        return _pick(rng, STEP_TEMPLATES).format(
            s1=s[0], s2=s[1], s3=s[2], S1=_cap(s[0]), S2=_cap(s[1]), S3=_cap(s[2])
        )
    return _pick(rng, CHAT_TEMPLATES).format(reaction=_pick(rng, REACTIONS), units=" ".join(topic.replies))


def write_response(request: Request, kind: str, rng: np.random.Generator) -> str:
    """Write a response of `kind` (one of RESPONSE_KINDS[request.kind]) to `request`."""
    if kind not in RESPONSE_KINDS[request.kind]:
        raise ValueError(f"response kind {kind!r} does not answer a {request.kind!r} request")
    if request.kind == "risky":
        act = RISKY_BY_NAME[request.topic]
        if kind == "harmful":
            s = act.harm_steps
            return _pick(rng, HARMFUL_TEMPLATES).format(
                s1=s[0], s2=s[1], s3=s[2], S1=_cap(s[0]), S2=_cap(s[1]), S3=_cap(s[2])
            )
        if kind == "refusal":
            return _pick(rng, REFUSALS)
        return _pick(rng, CONSTRUCTIVE_TEMPLATES).format(
            risk=act.risk, Risk=_cap(act.risk), alt=act.alternative
        )
    topic = TOPIC_BY_NAME[request.topic]
    if kind == "helpful":
        return _answer(request.kind, topic, rng)
    if kind == "off_topic":
        # A fluent, complete answer -- about another topic.
        others = [t for t in TOPICS if t.name != topic.name]
        return _answer(request.kind, _pick(rng, others), rng)
    units = {"question": topic.facts, "task": topic.steps, "chitchat": topic.replies}[request.kind]
    u = _pick(rng, units)
    if kind == "partly_helpful":
        if request.kind == "task":
            return _pick(rng, PARTLY_STEP_TEMPLATES).format(s=u)
        if request.kind == "question":
            return _pick(rng, PARTLY_FACT_TEMPLATES).format(u=u)
        return _pick(rng, CHAT_TEMPLATES).format(reaction=_pick(rng, REACTIONS), units=u)
    # rude: two insults, half of the time around one grudging on-topic sentence
    i, j = rng.permutation(len(RUDE_PHRASES))[:2]
    middle = (_cap(u) + ("." if request.kind == "task" else "")) if rng.random() < 0.5 else ""
    return " ".join(x for x in (RUDE_PHRASES[i], middle, RUDE_PHRASES[j]) if x)


def generate_corpus(
    n: int,
    seed: int,
    request_mix: dict[str, float] | None = None,
    response_mix: dict[str, dict[str, float]] | None = None,
) -> list[Dialogue]:
    """`n` dialogues drawn from the request and response mixes; the same seed gives the same list."""
    rng = np.random.default_rng(seed)
    request_mix = request_mix or DEFAULT_REQUEST_MIX
    response_mix = response_mix or DEFAULT_RESPONSE_MIX
    out = []
    for _ in range(n):
        req = sample_request(rng, request_mix)
        kind = _draw(rng, response_mix[req.kind])
        out.append(Dialogue(req, kind, write_response(req, kind, rng)))
    return out


def request_mix(request_kinds: tuple[str, ...] | list[str] | None = None) -> dict[str, float]:
    """The default request mix, restricted to `request_kinds` (all kinds when None)."""
    if request_kinds is None:
        return DEFAULT_REQUEST_MIX
    unknown = set(request_kinds) - set(REQUEST_KINDS)
    if unknown or not request_kinds:
        raise ValueError(
            f"request_kinds must be a non-empty subset of {REQUEST_KINDS}, got {request_kinds!r}"
        )
    return {k: p for k, p in DEFAULT_REQUEST_MIX.items() if k in request_kinds}


def sample_prompts(n: int, seed: int, request_kinds: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """`n` formatted prompts drawn from the default request mix (only `request_kinds`, if given)."""
    rng = np.random.default_rng(seed)
    mix = request_mix(request_kinds)
    return [format_prompt(sample_request(rng, mix).text) for _ in range(n)]


def sample_pairs(
    n: int, seed: int, request_kinds: tuple[str, ...] | list[str] | None = None
) -> list[tuple[str, str, str]]:
    """`n` (prompt, response_a, response_b): two different responses to one request, kinds drawn
    independently from the default response mix. This is the reference pair distribution on which
    the labeller panel is calibrated; same-kind pairs are kept because real comparison data has them.
    `request_kinds` (e.g. ``("risky",)``) restricts the requests, keeping their relative shares; None
    (the default) draws exactly the reference pairs."""
    return [(prompt, a, b) for prompt, (a, b) in sample_sets(n, seed, 2, request_kinds)]


def sample_sets(
    n: int, seed: int, k: int, request_kinds: tuple[str, ...] | list[str] | None = None
) -> list[tuple[str, list[str]]]:
    """`n` (prompt, [k different responses]) to one request each, drawn as `sample_pairs` draws its two,
    so any two responses of a set are a reference pair: the candidates of a K-way ranking. Some kinds
    have few surface forms (a refusal has 4), so each further response gets up to 20 draws to differ
    from those before; a request that runs out of draws is passed over."""
    if k < 2:
        raise ValueError(f"a set needs k >= 2 responses, got {k}")
    rng = np.random.default_rng(seed)
    kinds_mix = request_mix(request_kinds)
    sets: list[tuple[str, list[str]]] = []
    while len(sets) < n:
        req = sample_request(rng, kinds_mix)
        mix = DEFAULT_RESPONSE_MIX[req.kind]
        responses = [write_response(req, _draw(rng, mix), rng)]
        for _ in range(20 * (k - 1)):
            r = write_response(req, _draw(rng, mix), rng)
            if r not in responses:
                responses.append(r)
                if len(responses) == k:
                    sets.append((format_prompt(req.text), responses))
                    break
    return sets


def corpus_stats(dialogues: list[Dialogue]) -> dict[str, float]:
    """Shares of each request kind (`request/<kind>`) and response kind (`response/<kind>`), plus `n`."""
    n = max(len(dialogues), 1)
    req = Counter(d.request.kind for d in dialogues)
    resp = Counter(d.response_kind for d in dialogues)
    stats: dict[str, float] = {"n": float(len(dialogues))}
    for k in REQUEST_KINDS:
        stats[f"request/{k}"] = req[k] / n
    for k in BENIGN_RESPONSE_KINDS + RISKY_RESPONSE_KINDS:
        stats[f"response/{k}"] = resp[k] / n
    return stats


def normalize(text: str) -> str:
    """Lower-case words and numbers joined by single spaces: the form requests and units are matched in."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


_REQUEST_INDEX: dict[str, Request] = {normalize(r.text): r for r in all_requests()}
_REQUEST_TOKENS: list[tuple[frozenset[str], Request]] = [
    (frozenset(k.split()), r) for k, r in _REQUEST_INDEX.items()
]


def parse_request(text_or_prompt: str) -> Request | None:
    """Recover kind and topic of a request (raw or formatted). Exact match after lower-casing and
    dropping punctuation; otherwise the known request with the highest word Jaccard similarity if it
    is at least 0.8 (a typo or dropped word); otherwise None."""
    key = normalize(split_prompt(text_or_prompt))
    if not key:
        return None
    if key in _REQUEST_INDEX:
        return _REQUEST_INDEX[key]
    words = frozenset(key.split())
    best, best_sim = None, 0.0
    for toks, req in _REQUEST_TOKENS:
        sim = len(words & toks) / len(words | toks)
        if sim > best_sim:
            best, best_sim = req, sim
    if best is None or best_sim < 0.8:
        return None
    return Request(best.kind, best.topic, split_prompt(text_or_prompt))
