"""Files shipped with the package: the trained tiny demo model (training/)."""

from pathlib import Path

TINY = Path(__file__).resolve().parent / "qwen3next-tiny"  # bf16, in the Hub layout

# The one tool the tiny model was trained to call (training/corpus.py); the demo offers it.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name."}},
            "required": ["city"],
        },
    },
}
