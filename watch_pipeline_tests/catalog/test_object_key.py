"""Object keys are safe for every store, whatever the file's name."""

from watch_pipeline.catalog.queries import object_key


def test_a_long_name_is_shortened_keeping_its_extension():
    key = object_key(1, 2, "n" * 240 + ".wav")
    name = key.rsplit("/", 1)[1]
    assert key.startswith("user_1/file_2/n") and name.endswith(".wav")
    assert len(name.encode()) <= 180


def test_multibyte_names_are_cut_on_a_character_boundary():
    name = object_key(1, 2, "é" * 200 + ".mp4").rsplit("/", 1)[1]
    assert name.endswith(".mp4") and len(name.encode()) <= 180
    name.encode("utf-8")  # no half character left behind


def test_separators_and_control_characters_never_reach_the_key():
    assert object_key(3, 4, "a/b\\c\x1b[31m\n.wav") == "user_3/file_4/a_b_c_[31m_.wav"
    assert object_key(3, 4, "   ") == "user_3/file_4/media"
