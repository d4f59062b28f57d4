# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The examples under etc/ stay valid."""

import configparser
import logging
import logging.config
import os

import yaml

from nodepool.config import load_config

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "etc")


def test_example_config_is_valid():
    config = load_config(os.path.join(ETC, "nodepool.yaml"))
    assert set(config.providers) == {"aws-us-east-1", "lab"}
    assert config.labels["ubuntu-jammy"].min_ready == 2


def _restore_logging():
    logging.getLogger().handlers.clear()
    for name in ("nodepool", "kazoo", "botocore", "openstack"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)


def test_logging_examples_load(tmp_path):
    log_file = str(tmp_path / "nodepool.log")
    try:
        for name in ("launcher-logging.yaml", "builder-logging.yaml"):
            with open(os.path.join(ETC, name)) as f:
                data = yaml.safe_load(f)
            data["handlers"]["file"]["filename"] = log_file
            logging.config.dictConfig(data)
            logging.getLogger("nodepool.test").info("hello %s", name)
        with open(os.path.join(ETC, "logging.ini")) as f:
            ini = f.read().replace("/var/log/nodepool/launcher.log",
                                   log_file)
        ini_path = tmp_path / "logging.ini"
        ini_path.write_text(ini)
        logging.config.fileConfig(str(ini_path),
                                  disable_existing_loggers=False)
        logging.getLogger("nodepool.test").info("hello ini")
    finally:
        _restore_logging()
    text = open(log_file).read()
    assert "hello launcher-logging.yaml" in text and "hello ini" in text


def test_systemd_units_restrict_umask():
    for name in ("nodepool-launcher.service", "nodepool-builder.service"):
        parser = configparser.ConfigParser(strict=False,
                                           interpolation=None)
        parser.optionxform = str
        parser.read(os.path.join(ETC, name))
        assert parser["Service"]["UMask"] == "0027", name
        assert parser["Service"]["User"] == "nodepool", name
